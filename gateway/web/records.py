"""Thin handlers for recording a consent and reading a subject's history."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.errors import BadRequest, NotFound, Unavailable
from gateway.recording import MAX_BODY_BYTES, RecordContext, parse_body, validate

_ALLOW_METHODS = "POST, GET, OPTIONS"
_ALLOW_HEADERS = "Content-Type, Authorization"


def _json(body: Any, status: int, headers: dict[str, str]) -> Response:
    headers["Cache-Control"] = "no-store"
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _error(exc: BadRequest | Unavailable, headers: dict[str, str]) -> Response:
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(exc.retry_after)
        return _json({"error": "unavailable", "detail": exc.message}, 503, headers)
    body = {"error": exc.code, "detail": exc.detail}
    if exc.field:
        body["field"] = exc.field
    return _json(body, exc.status_code, headers)


def _site(request: Request) -> Any:
    site_id = request.path_params["site"]
    bundle = request.app.state.gateway.catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    return bundle


def _cors(request: Request, bundle: Any) -> dict[str, str]:
    """CORS headers for an allowed Origin; no Origin (apps, servers) needs none."""
    origin = request.headers.get("origin")
    if origin is None:
        return {}
    if origin not in bundle.site.allowed_origins:
        raise BadRequest(
            "origin_not_allowed",
            f"origin {origin[:100]!r} is not allowed for site {bundle.site.id}",
            status_code=403,
        )
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        # isascii: "²".isdigit() is true, but int() refuses it.
        if not (length.isascii() and length.isdigit()):
            raise BadRequest("invalid_content_length", "Content-Length must be a number")
        if int(length) > MAX_BODY_BYTES:
            raise BadRequest(
                "body_too_large", f"body exceeds {MAX_BODY_BYTES} bytes", status_code=413
            )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(
                "body_too_large", f"body exceeds {MAX_BODY_BYTES} bytes", status_code=413
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def post_consent(request: Request) -> Response:
    """Validate, enrich and durably record one choice; 201 with a receipt."""
    headers: dict[str, str] = {}
    try:
        bundle = _site(request)
        headers = _cors(request, bundle)
        raw = await _read_body(request)
        body = parse_body(raw, request.headers.get("content-type", ""))
        consent = validate(body, bundle.site, bundle.known_versions)
        state = request.app.state
        visitor = state.gateway.visitor(request, bundle)
        context = RecordContext(
            ip=visitor.ip,
            region=visitor.region,
            rule=visitor.rule,
            gpc=visitor.gpc,
            user_agent=request.headers.get("user-agent", ""),
            origin=request.headers.get("origin", ""),
            language=visitor.language,
            consent_revision=bundle.consent_revision,
        )
        result = await state.recording.record(consent, context)
    except (BadRequest, Unavailable) as exc:
        return _error(exc, headers)
    if result.duplicate:
        headers["Idempotent-Replayed"] = "true"
    answer = {
        "record_id": result.record_id,
        "recorded_at": result.recorded_at,
        "receipt": result.receipt,
    }
    return _json(answer, 201, headers)


def _token(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    token = request.query_params.get("receipt")
    if token:
        return token
    raise BadRequest(
        "receipt_required",
        "send the subject's receipt as `Authorization: Bearer <receipt>` or ?receipt=",
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
        Route(
            "/v1/sites/{site}/subjects/{subject_id}/consents", subject_consents, methods=["GET"]
        ),
        Route("/v1/sites/{site}/subjects/{subject_id}/consents", preflight, methods=["OPTIONS"]),
    ]
