"""One JSON error shape on every path: `{"error", "detail"}`, plus "field" when one is to blame."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.core.errors import BadRequest, Unavailable
from gateway.web.errors import INTERNAL_ERROR, answer_for, error_answer
from tests.helpers import make_settings


def _shape(body: bytes) -> dict[str, str]:
    data = orjson.loads(body)
    assert isinstance(data, dict)
    assert set(data) in ({"error", "detail"}, {"error", "detail", "field"})
    assert all(isinstance(v, str) and v for v in data.values())
    return data


def test_the_shape_is_pinned() -> None:
    status, headers, body = error_answer(422, "unknown_purpose", "no purpose x", field="choices.x")
    assert status == 422
    assert body == b'{"error":"unknown_purpose","detail":"no purpose x","field":"choices.x"}'
    assert headers == [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        (b"content-length", str(len(body)).encode()),
    ]
    assert error_answer(400, "invalid_json", "bad")[2] == b'{"error":"invalid_json","detail":"bad"}'
    assert INTERNAL_ERROR[0] == 500
    assert (
        INTERNAL_ERROR[2]
        == b'{"error":"internal_error","detail":"the gateway failed; it is logged"}'
    )


def test_unavailable_carries_retry_after() -> None:
    status, headers, body = answer_for(Unavailable("the outbox is full", retry_after=5))
    assert status == 503 and (b"retry-after", b"5") in headers
    assert _shape(body) == {"error": "unavailable", "detail": "the outbox is full"}


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/no/such/path", 404, "not_found"),
        ("DELETE", "/v1/sites/demo/config", 405, "method_not_allowed"),
        ("PUT", "/v1/sites/demo/consents", 405, "method_not_allowed"),
        ("GET", "/v1/sites/nope/privacy-center", 404, "unknown_site"),
        ("GET", "/v1/sites/demo/config?region=Germany", 400, "invalid_parameter"),
        ("POST", "/v1/sites/demo/consents", 415, "unsupported_media_type"),
        ("GET", f"/v1/sites/demo/subjects/{'0' * 32}/consents", 403, "receipt_required"),
        ("GET", "/v1/sites/demo/subjects/a@b.example/consents", 404, "invalid_subject_id"),
    ],
)
def test_routing_and_endpoint_errors_share_the_shape(
    tmp_path: Path, method: str, path: str, status: int, code: str
) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        r = c.request(method, path)
    assert r.status_code == status
    assert _shape(r.content)["error"] == code
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"


def test_a_bug_in_a_routed_endpoint_is_the_same_json_500(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))

    async def broken(request: object) -> None:
        raise RuntimeError("a bug, injected")

    app.router.routes.append(Route("/broken", broken))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/broken")
    assert (r.status_code, r.content) == (INTERNAL_ERROR[0], INTERNAL_ERROR[2])
    assert r.headers["cache-control"] == "no-store"


def test_field_names_the_input_to_blame() -> None:
    _, _, body = answer_for(BadRequest("invalid_field", "must be x", field="subject_id"))
    assert _shape(body)["field"] == "subject_id"
