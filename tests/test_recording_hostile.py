"""Hostile input, property-based: no body or header yields a 500 or a partial record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.core.model import ConsentRecord
from gateway.core.record_codec import decode_record
from gateway.core.settings import Settings
from gateway.recording.consent import validate
from tests.pg import ORIGIN, ROOT

URL = "/v1/sites/demo/consents"
ALLOWED = {201, 400, 403, 404, 413, 415, 422}
FIELDS = ("subject_id", "banner_version", "action", "choices", "channel", "language",
          "page_url", "idempotency_key", "withdraws")  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
QUIET = [HealthCheck.function_scoped_fixture]
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


LIVE: dict[str, Any] = {}  # the demo site as the running app loaded it


def consent_body(subject: str) -> dict[str, Any]:
    bundle = LIVE["bundle"]
    return {"subject_id": subject, "banner_version": bundle.banner_version,
            "action": "accept_all",
            "choices": {p.id: True for p in bundle.site.optional_purposes}}  # fmt: skip


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = Path(tmp_path_factory.mktemp("hostile")) / "data"
    settings_ = Settings(
        banners_dir=ROOT / "banners", locales_dir=ROOT / "locales", data_dir=data,
        durability="process", node_id="hostile", reload=False,
    )  # fmt: skip
    with TestClient(create_app(settings_), base_url="http://127.0.0.1:8000") as c:
        # Keep every accepted record in the outbox, where the test reads it back.
        c.portal.call(c.app.state.recording.forwarder.stop, 0)  # type: ignore[attr-defined,union-attr]
        LIVE["bundle"] = c.app.state.gateway.catalog.get("demo")  # type: ignore[attr-defined]
        yield c


def outbox_bodies(client: TestClient) -> list[Any]:
    outbox = client.app.state.recording.outbox  # type: ignore[attr-defined]
    outbox.rewind()
    rows = client.portal.call(outbox.claim, 100_000)  # type: ignore[union-attr]
    return [r.body for r in rows]


def check(client: TestClient, response: Any, before: int) -> None:
    assert response.status_code in ALLOWED, response.text
    body = response.json()
    outbox = client.app.state.recording.outbox  # type: ignore[attr-defined]
    if response.status_code == 201:
        assert set(body) == {"record_id", "recorded_at", "receipt"}
        stored = [decode_record(b) for b in outbox_bodies(client)]
        record = next(r for r in stored if r.record_id == body["record_id"])
        # The stored record is whole and would pass validation again.
        assert isinstance(record, ConsentRecord)
        assert record.as_json() == ConsentRecord.from_json(record.as_json()).as_json()
        assert record.node_id == "hostile"
        assert record.recorded_at.endswith("Z")
        bundle = LIVE["bundle"]
        assert set(record.choices) == {p.id for p in bundle.site.purposes}
        again = validate(record.as_json(), bundle.site, bundle.known_versions)
        assert again.subject_id == record.subject_id
    else:
        assert set(body) <= {"error", "detail", "field"}
        assert isinstance(body["error"], str)
        assert outbox.commits == before  # nothing reached the buffer


@settings(max_examples=150, deadline=None, suppress_health_check=QUIET)
@given(field=st.sampled_from(FIELDS), value=json_values, drop=st.booleans())
def test_any_single_field_value(client: TestClient, field: str, value: Any, drop: bool) -> None:
    body = consent_body("hostile-1")
    if drop:
        body.pop(field, None)
    else:
        body[field] = value
    before = client.app.state.recording.outbox.commits  # type: ignore[attr-defined]
    check(
        client,
        client.post(URL, content=json.dumps(body), headers={"Content-Type": "application/json"}),
        before,
    )


@settings(max_examples=100, deadline=None, suppress_health_check=QUIET)
@given(body=json_values)
def test_any_json_document(client: TestClient, body: Any) -> None:
    before = client.app.state.recording.outbox.commits  # type: ignore[attr-defined]
    check(
        client,
        client.post(URL, content=json.dumps(body), headers={"Content-Type": "application/json"}),
        before,
    )


@settings(max_examples=100, deadline=None, suppress_health_check=QUIET)
@given(raw=st.binary(max_size=300), content_type=header_text)
def test_any_bytes_and_content_type(client: TestClient, raw: bytes, content_type: str) -> None:
    before = client.app.state.recording.outbox.commits  # type: ignore[attr-defined]
    check(client, client.post(URL, content=raw, headers={"Content-Type": content_type}), before)


@settings(max_examples=60, deadline=None, suppress_health_check=QUIET)
@given(
    origin=st.one_of(st.none(), st.just(ORIGIN), header_text),
    user_agent=header_text,
    gpc=header_text,
    authorization=header_text,
    site=st.sampled_from(["demo", "nope", "..", "demo%00", "d" * 300]),
    subject=st.text(max_size=40),
)
def test_any_headers_and_paths(
    client: TestClient,
    origin: str | None,
    user_agent: str,
    gpc: str,
    authorization: str,
    site: str,
    subject: str,
) -> None:
    headers = {
        "Content-Type": "text/plain",
        "User-Agent": user_agent,
        "Sec-GPC": gpc,
        "Authorization": authorization,
    }
    if origin is not None:
        headers["Origin"] = origin
    before = client.app.state.recording.outbox.commits  # type: ignore[attr-defined]
    body = orjson.dumps(consent_body("hostile-2"))
    check(client, client.post(f"/v1/sites/{site}/consents", content=body, headers=headers), before)
    path_subject = quote(subject or "x", safe="")
    r = client.get(f"/v1/sites/{site}/subjects/{path_subject}/consents", headers=headers)
    assert r.status_code in {200, 403, 404, 503} | {405}, r.text
    assert r.status_code != 200 or authorization.startswith("Bearer ")
