"""The front answers the hot routes from the one route table, byte for byte as the routes do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from gateway.app import GatewayApp, create_app
from gateway.sites.catalog import load_site
from gateway.web.front import HotPaths
from tests.asgi import Answer, call, scope_for
from tests.helpers import ROOT, make_settings, shipped_rules
from tests.pg import ORIGIN, consent_body

BUNDLE = load_site(ROOT / "banners" / "demo", ROOT / "locales", shipped_rules())
CONFIG = "/v1/sites/demo/config"
CONSENTS = "/v1/sites/demo/consents"
JSON = [("content-type", "application/json")]
DE = [("accept-language", "de-DE,de;q=0.9"), ("cf-ipcountry", "DE")]
REPLAYED = orjson.dumps(consent_body(BUNDLE, "parity-1", idempotency_key="parity-key-1"))

Case = tuple[str, str, list[tuple[str, str]], bytes]
# Success and error answers of every hot route; the POSTs that succeed are replays of one
# key, so the two paths must answer with the same record and receipt.
CASES: list[Case] = [
    ("GET", CONFIG, DE, b""),
    ("HEAD", CONFIG, DE, b""),
    ("GET", CONFIG + "?region=US-CA&lang=es", [("sec-gpc", "1")], b""),
    ("GET", CONFIG + "?region=FR&unknown=1", [], b""),
    ("GET", CONFIG, [*DE, ("if-none-match", "*")], b""),
    ("GET", "/v1/sites/demo/banner?lang=ar&region=EG", [], b""),
    ("GET", "/v1/sites/demo/consent.js", DE, b""),
    ("GET", "/v1/sites/nope/config", [], b""),
    ("HEAD", "/v1/sites/nope/banner", [], b""),
    ("GET", CONFIG + "?lang=%00%01", [], b""),
    ("GET", CONFIG + "?region=Germany", [], b""),
    ("GET", CONFIG, [("accept-language", "en;q=7")], b""),
    ("POST", CONSENTS, [*JSON, ("origin", ORIGIN)], REPLAYED),
    ("POST", CONSENTS, JSON, b"{not json"),
    ("POST", CONSENTS, [("content-type", "application/xml")], b"<x/>"),
    ("POST", CONSENTS, JSON, orjson.dumps({**consent_body(BUNDLE, "s"), "choices": {"x": 1}})),
    ("POST", CONSENTS, [*JSON, ("origin", "http://evil.example")], REPLAYED),
    ("POST", CONSENTS, JSON, b"{" + b" " * 17000 + b"}"),
    ("POST", "/v1/sites/nope/consents", JSON, REPLAYED),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("front"))
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as c:
        first = c.post(CONSENTS, content=REPLAYED, headers=dict(JSON))
        assert first.status_code == 201
        yield c


def _front(client: TestClient) -> HotPaths:
    app = client.app
    assert isinstance(app, GatewayApp)
    return app.front


def both(client: TestClient, scope: dict[str, Any], body: bytes) -> tuple[Answer, Answer]:
    """The front's answer and the routed answer (Starlette's stack behind the front).

    The request log (on by default: errors) answers a logged request with its X-Request-ID;
    the request names one, so both paths echo the same."""
    front = _front(client)
    scope = {**scope, "headers": [*scope["headers"], (b"x-request-id", b"parity-1")]}
    assert front.match(dict(scope)) is not None, "the front must answer this itself"

    async def run() -> tuple[Answer, Answer]:
        return await call(front, scope, body), await call(front.app, scope, body)

    return client.portal.call(run)  # type: ignore[union-attr]


@pytest.mark.parametrize(("method", "target", "headers", "body"), CASES)
def test_front_and_routes_answer_byte_for_byte_alike(
    client: TestClient, method: str, target: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    fast, routed = both(client, scope_for(client.app, method, target, headers), body)
    assert fast == routed
    assert fast[0] in (200, 201, 304, 400, 403, 404, 413, 415, 422)


@pytest.mark.parametrize(("method", "target", "headers", "body"), CASES[:8] + CASES[12:14])
def test_the_front_keeps_answering_under_a_root_path(
    client: TestClient, method: str, target: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    scope = scope_for(client.app, method, target, headers, root_path="/consent")
    fast, routed = both(client, scope, body)
    assert fast == routed
    plain, _ = both(client, scope_for(client.app, method, target, headers), body)
    assert fast == plain


def test_a_path_outside_the_root_path_is_not_the_fronts(client: TestClient) -> None:
    scope = scope_for(client.app, "GET", "/elsewhere/v1/sites/demo/config", root_path="/consent")
    scope["path"] = scope["raw_path"] = "/elsewhere/v1/sites/demo/config"
    assert _front(client).match(scope) is None


def test_the_front_takes_its_patterns_from_the_route_table(client: TestClient) -> None:
    front = _front(client)
    app = client.app
    assert isinstance(app, GatewayApp)
    hot = {(m, endpoint.__name__) for m, routes in front.routes.items() for _, endpoint in routes}
    assert hot == {
        ("GET", "serve_config"),
        ("HEAD", "serve_config"),
        ("GET", "serve_banner"),
        ("HEAD", "serve_banner"),
        ("GET", "serve_js"),
        ("HEAD", "serve_js"),
        ("GET", "serve_part"),
        ("HEAD", "serve_part"),
        ("POST", "post_consent"),
        ("POST", "post_preferences"),
    }
    # Each pattern is the very object the router matches with.
    route_patterns = {id(getattr(r, "path_regex", None)) for r in app.router.routes}
    assert all(id(p) in route_patterns for routes in front.routes.values() for p, _ in routes)


def test_unexpected_failures_are_the_same_json_500_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(make_settings(tmp_path)), client=("127.0.0.1", 50000)) as c:
        gateway = c.app.state.gateway  # type: ignore[attr-defined]
        recording = c.app.state.recording  # type: ignore[attr-defined]

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug, injected")

        monkeypatch.setattr(gateway, "body", broken)
        monkeypatch.setattr(recording, "record", broken)
        for method, target, body in (("GET", CONFIG, b""), ("POST", CONSENTS, REPLAYED)):
            fast, routed = both(c, scope_for(c.app, method, target, JSON), body)
            assert fast == routed
            assert fast[0] == 500
            assert orjson.loads(fast[2]) == {
                "error": "internal_error",
                "detail": "the gateway failed; it is logged",
            }
