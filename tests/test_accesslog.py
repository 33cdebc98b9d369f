"""Credentials in logs: the access log keeps serving parameters and drops every other value."""

from __future__ import annotations

import logging

import pytest

from gateway.web.accesslog import RedactQuery, redact_target

RECEIPT = "v1.eyJ1IjoiYWxpY2UifQ.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/healthz", "/healthz"),
        (
            f"/v1/sites/demo/subjects/a/consents?receipt={RECEIPT}",
            "/v1/sites/demo/subjects/a/consents?receipt=…",
        ),
        (
            "/v1/sites/demo/config?lang=de&region=US-CA",
            "/v1/sites/demo/config?lang=de&region=US-CA",
        ),
        (
            "/admin/preview?site=demo&token=s3cret&lang=fr",
            "/admin/preview?site=demo&token=…&lang=fr",
        ),
        (
            "/x?" + "&".join(f"k{i}=v" for i in range(12)),
            "/x?" + "&".join(f"k{i}=…" for i in range(8)) + "&…4 more",
        ),
        ("/x?lang=" + "d" * 5000, "/x?lang=" + "d" * 32),
    ],
)
def test_query_values_other_than_serving_parameters_are_redacted(target: str, logged: str) -> None:
    assert redact_target(target) == logged


def test_filter_rewrites_uvicorn_access_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/a?receipt={RECEIPT}", "1.1", 403), None,
    )  # fmt: skip
    assert RedactQuery().filter(record)
    assert RECEIPT not in record.getMessage()
    assert record.getMessage() == '127.0.0.1:5 - "GET /a?receipt=… HTTP/1.1" 403'
