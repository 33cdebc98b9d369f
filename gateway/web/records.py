"""Thin handlers for recording a consent and reading a subject's history."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive

from gateway.core.errors import BadRequest, NotFound, Unavailable
from gateway.core.ratelimit import RateLimited
from gateway.recording.consent import MAX_BODY_BYTES, RecordContext, parse_body, validate

_ALLOW_METHODS = "POST, GET, OPTIONS"
_ALLOW_HEADERS = "Content-Type, Authorization"


RawHeaders = list[tuple[bytes, bytes]]
Answer = tuple[int, RawHeaders, bytes]
RECORD_PATH = re.compile(r"^/v1/sites/([^/]{1,64})/consents$")


def _json(body: Any, status: int, headers: dict[str, str]) -> Response:
    headers["Cache-Control"] = "no-store"
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _error_body(exc: BadRequest | Unavailable, headers: dict[str, str]) -> tuple[int, Any]:
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(exc.retry_after)
        return 503, {"error": "unavailable", "detail": exc.message}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    body = {"error": exc.code, "detail": exc.detail}
    if exc.field:
        body["field"] = exc.field
    return exc.status_code, body


def _error(exc: BadRequest | Unavailable, headers: dict[str, str]) -> Response:
    status, body = _error_body(exc, headers)
    return _json(body, status, headers)


def _bundle(state: Any, site_id: str) -> Any:
    bundle = state.gateway.catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    return bundle


def _site(request: Request) -> Any:
    return _bundle(request.app.state, request.path_params["site"])


def _own_origin(scheme: str, headers: Headers) -> str:
    return f"{scheme}://{headers.get('host', '')}"


def cors_headers(origin: str | None, own_origin: str, bundle: Any) -> dict[str, str]:
    """CORS headers for an allowed Origin; no Origin (apps, servers) needs none.

    The gateway's own pages (the privacy center) post from its own origin, which is allowed.
    """
    if origin is None or origin == own_origin:
        return {}
    if origin not in bundle.site.allowed_origins:
        raise BadRequest(
            "origin_not_allowed",
            f"origin {origin[:100]!r} is not allowed for site {bundle.site.id}",
            status_code=403,
        )
    # No Access-Control-Allow-Credentials: nothing here reads cookies (the snippet posts
    # with credentials "omit", history reads take the receipt as a bearer token), so a
    # browser never needs to send them, and an allowed origin is never granted them.
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def _cors(request: Request, bundle: Any) -> dict[str, str]:
    return cors_headers(
        request.headers.get("origin"), _own_origin(request.url.scheme, request.headers), bundle
    )


async def read_body(receive: Receive, declared: str | None) -> bytes:
    """The request body, refused past MAX_BODY_BYTES before it is all read."""
    if declared is not None:
        # isascii: "²".isdigit() is true, but int() refuses it.
        if not (declared.isascii() and declared.isdigit()):
            raise BadRequest("invalid_content_length", "Content-Length must be a number")
        if int(declared) > MAX_BODY_BYTES:
            raise BadRequest(
                "body_too_large", f"body exceeds {MAX_BODY_BYTES} bytes", status_code=413
            )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("client_disconnected", "the client went away mid-body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(
                "body_too_large", f"body exceeds {MAX_BODY_BYTES} bytes", status_code=413
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _raw(status: int, headers: dict[str, str], body: Any) -> Answer:
    content = orjson.dumps(body)
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw += [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        (b"content-length", str(len(content)).encode()),
    ]
    return status, raw, content


# Headers take_consent reads itself, picked in one pass over the raw list (Starlette's
# Headers.get scans the whole list on every call, and this path would make ten calls).
_WANTED = frozenset(
    (
        b"origin",
        b"content-length",
        b"content-type",
        b"user-agent",
        b"host",
        b"accept-language",
        b"sec-gpc",
    )
)


def _pick(raw: RawHeaders) -> tuple[dict[bytes, str], list[str]]:
    """The first value of each wanted header, and every Sec-GPC line (GPC reads them all)."""
    found: dict[bytes, str] = {}
    gpc: list[str] = []
    for name, value in raw:
        if name in _WANTED:
            if name == b"sec-gpc":
                gpc.append(value.decode("latin-1"))
            elif name not in found:
                found[name] = value.decode("latin-1")
    return found, gpc


async def take_consent(
    state: Any,
    site_id: str,
    peer: str | None,
    raw_headers: RawHeaders,
    scheme: str,
    receive: Receive,
) -> Answer:
    """Validate, enrich and durably record one choice; 201 with a receipt, or a JSON error."""
    cors: dict[str, str] = {}
    found, gpc_values = _pick(raw_headers)
    origin = found.get(b"origin")
    try:
        bundle = _bundle(state, site_id)
        cors = cors_headers(origin, f"{scheme}://{found.get(b'host', '')}", bundle)
        raw = await read_body(receive, found.get(b"content-length"))
        body = parse_body(raw, found.get(b"content-type", ""))
        consent = validate(body, bundle.site, bundle.known_versions)
        # Where the visitor is comes from detection only, never from the request's query.
        gateway = state.gateway
        ip, region = gateway.locator.locate(peer, Headers(raw=raw_headers))
        state.limits.check(ip, bundle.site.id, consent.subject_id)  # 429 past the write limits
        region, gpc, language, rule = gateway.decide(
            bundle, region, found.get(b"accept-language"), gpc_values
        )
        context = RecordContext(
            ip=ip, region=region, rule=rule, gpc=gpc,
            user_agent=found.get(b"user-agent", ""), origin=origin or "",
            language=language, consent_revision=bundle.consent_revision,
        )  # fmt: skip
        result = await state.recording.record(consent, context)
    except (BadRequest, Unavailable) as exc:
        status, error = _error_body(exc, cors)
        return _raw(status, cors, error)
    if result.duplicate:
        cors["Idempotent-Replayed"] = "true"
    answer = {
        "record_id": result.record_id,
        "recorded_at": result.recorded_at,
        "receipt": result.receipt,
    }
    return _raw(201, cors, answer)


async def post_consent(request: Request) -> Response:
    """The routed form of `take_consent` (the front, gateway/web/front.py, answers first)."""
    client = request.client
    status, headers, body = await take_consent(
        request.app.state,
        request.path_params["site"],
        client.host if client else None,
        request.headers.raw,
        request.url.scheme,
        request.receive,
    )
    response = Response(status_code=status)
    response.body = body
    response.raw_headers = headers
    return response


def _token(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    # Never from the query: URLs end up in access logs, proxies' logs and browser history.
    raise BadRequest(
        "receipt_required",
        "send the subject's receipt as `Authorization: Bearer <receipt>`",
        status_code=403,
    )


async def subject_consents(request: Request) -> Response:
    """A subject's current choices and history, for the holder of one of their receipts."""
    headers: dict[str, str] = {}
    try:
        bundle = _site(request)
        headers = _cors(request, bundle)
        subject_id = request.path_params["subject_id"]
        recording = request.app.state.recording
        claims = recording.receipts.verify(_token(request))
        if claims.site != bundle.site.id or claims.subject_id != subject_id:
            raise BadRequest(
                "forbidden", "the receipt belongs to another subject or site", status_code=403
            )
        history = await recording.history(bundle.site.id, subject_id)
    except (BadRequest, Unavailable) as exc:
        return _error(exc, headers)
    current = history.get("current")
    body = {
        "site": bundle.site.id,
        "subject_id": subject_id,
        "choices": dict(current["choices"]) if current else None,
        "current": current,
        "history": history.get("history", []),
    }
    return _json(body, 200, headers)


async def preflight(request: Request) -> Response:
    """CORS preflight: allowed origins only."""
    try:
        bundle = _site(request)
        headers = _cors(request, bundle)
    except BadRequest as exc:
        return _error(exc, {})
    headers.update(
        {
            "Access-Control-Allow-Methods": _ALLOW_METHODS,
            "Access-Control-Allow-Headers": _ALLOW_HEADERS,
            "Access-Control-Max-Age": "600",
        }
    )
    return Response(status_code=204, headers=headers)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/sites/{site}/consents", post_consent, methods=["POST"]),
        Route("/v1/sites/{site}/consents", preflight, methods=["OPTIONS"]),
        Route("/v1/sites/{site}/subjects/{subject_id}/consents", subject_consents, methods=["GET"]),
        Route("/v1/sites/{site}/subjects/{subject_id}/consents", preflight, methods=["OPTIONS"]),
    ]
