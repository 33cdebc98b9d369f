"""Request-line and header limits answer 414/431 in the JSON error shape, before the app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.web.limits import MAX_HEADER_BYTES, MAX_HEADERS, MAX_TARGET_BYTES
from tests.helpers import make_settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        yield c


def test_an_oversized_url_gets_414(client: TestClient) -> None:
    r = client.get("/v1/sites/demo/config?x=" + "a" * MAX_TARGET_BYTES)
    assert r.status_code == 414
    assert r.json() == {
        "error": "uri_too_long",
        "detail": f"the path and query exceed {MAX_TARGET_BYTES} bytes",
    }


def test_an_oversized_header_gets_431_naming_it(client: TestClient) -> None:
    r = client.get("/v1/sites/demo/config", headers={"X-Filler": "a" * MAX_HEADER_BYTES})
    assert r.status_code == 431
    assert r.json()["error"] == "header_too_large" and r.json()["field"] == "x-filler"


def test_too_many_headers_get_431(client: TestClient) -> None:
    headers = [(f"x-h{i}", "1") for i in range(MAX_HEADERS + 1)]
    r = client.post("/v1/sites/demo/consents", headers=headers, content=b"{}")
    assert r.status_code == 431 and r.json()["error"] == "too_many_headers"


def test_many_mid_sized_headers_get_431(client: TestClient) -> None:
    headers = [(f"x-h{i}", "a" * 4000) for i in range(10)]
    r = client.get("/healthz", headers=headers)
    assert r.status_code == 431 and r.json()["error"] == "headers_too_large"


def test_requests_within_the_limits_pass(client: TestClient) -> None:
    r = client.get("/v1/sites/demo/config?region=DE", headers={"X-Filler": "a" * 4000})
    assert r.status_code == 200
