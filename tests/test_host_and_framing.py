"""Host header injection and request framing: what a client's headers may not decide."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.core.settings import Settings
from gateway.serving import hosts
from tests.helpers import make_settings
from tests.pg import ORIGIN, consent_body


def _config(client: TestClient, host: str) -> dict[str, object]:
    response = client.get("/v1/sites/demo/config", headers={"Host": host})
    assert response.status_code == 200
    document: dict[str, object] = response.json()
    return document


def test_host_header_never_becomes_record_url(tmp_path: Path) -> None:
    """Injection threat: with GATEWAY_PUBLIC_URL unset, `Host: evil.example` made the snippet
    post visitors' choices to evil.example (and a shared cache could keep that answer)."""
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert _config(client, "evil.example")["record_url"] == "/v1/sites/demo/consents"
        js = client.get("/v1/sites/demo/consent.js", headers={"Host": "evil.example:8000"})
        assert b"evil.example" not in js.content
        # The bind address is a public host by default.
        bound = _config(client, "127.0.0.1:8000")["record_url"]
        assert bound == "http://127.0.0.1:8000/v1/sites/demo/consents"
        assert _config(client, "localhost:8000")["record_url"] == (
            "http://localhost:8000/v1/sites/demo/consents"
        )


@pytest.mark.parametrize(
    ("changes", "host", "expected"),
    [
        ({"public_hosts": ("cmp.shop.example",)}, "cmp.shop.example", "http://cmp.shop.example"),
        ({"public_hosts": ("cmp.shop.example",)}, "CMP.Shop.Example", "http://CMP.Shop.Example"),
        ({"public_hosts": ("cmp.shop.example",)}, "127.0.0.1:8000", ""),
        ({"public_url": "https://cmp.example/"}, "evil.example", "https://cmp.example"),
        ({}, "x" * 400, ""),
    ],
)
def test_record_url_base_is_configured_not_chosen(
    tmp_path: Path, changes: dict[str, object], host: str, expected: str
) -> None:
    settings = make_settings(tmp_path, **changes)
    assert hosts.base_url(settings, hosts.public_hosts(settings), "http", host) == expected


def test_wildcard_bind_trusts_no_host_by_default() -> None:
    settings = Settings(host="0.0.0.0", port=8000)
    assert hosts.public_hosts(settings) == frozenset({"0.0.0.0:8000"})


def test_trailing_slash_is_not_redirected_to_the_clients_host(tmp_path: Path) -> None:
    """Open-redirect threat: `GET /…/config/` answered 307 to http://<Host>/…/config."""
    with TestClient(create_app(make_settings(tmp_path))) as client:
        response = client.get(
            "/v1/sites/demo/config/", headers={"Host": "evil.example"}, follow_redirects=False
        )
        assert response.status_code == 404 and "location" not in response.headers
        assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate", "chunked, chunked, br", "x"])
def test_transfer_codings_other_than_chunked_are_refused(tmp_path: Path, coding: str) -> None:
    """Smuggling/ambiguity threat: `Transfer-Encoding: gzip, chunked` was accepted and the
    still-compressed bytes were read as the body."""
    with TestClient(create_app(make_settings(tmp_path))) as client:
        bundle = client.app.state.gateway.catalog.get("demo")  # type: ignore[attr-defined]
        body = orjson.dumps(consent_body(bundle, "te-1"))
        response = client.post(
            "/v1/sites/demo/consents",
            content=body,
            headers={"Content-Type": "application/json", "Transfer-Encoding": coding},
        )
        assert response.status_code == 400
        assert response.json()["error"] == "unsupported_transfer_coding"
        assert client.app.state.recording.outbox.depth == 0  # type: ignore[attr-defined]


def test_plain_chunked_bodies_are_still_accepted(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        bundle = client.app.state.gateway.catalog.get("demo")  # type: ignore[attr-defined]
        body = orjson.dumps(consent_body(bundle, "te-2"))
        response = client.post(
            "/v1/sites/demo/consents",
            content=iter([body[:10], body[10:]]),  # a generator body goes out chunked
            headers={"Content-Type": "application/json", "Origin": ORIGIN},
        )
        assert response.status_code == 201
