"""Thin handlers for recording a consent and reading a subject's history.

They translate HTTP only: headers, body bytes and the answer. The recording use case itself
(parse, validate, locate, decide, enrich, sign, append) is one call into the service,
``RecordingService.record_consent`` (gateway/recording/service.py).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope

from gateway.core import paths
from gateway.core.errors import BadRequest, Unavailable
from gateway.recording.fields import MAX_BODY_BYTES
from gateway.recording.receipts import check_read_lifetime
from gateway.recording.service import RecordingService
from gateway.recording.subjects import is_subject_id, secret_from_authorization
from gateway.recording.submission import Submission
from gateway.sites.catalog import SiteBundle
from gateway.standards.issuing import iab_answer
from gateway.web.answer import Answer, AnswerResponse, RawHeaders, json_answer
from gateway.web.endpoint import AnswerEndpoint
from gateway.web.errors import answer_for, raw_headers

_ALLOW_METHODS = "POST, GET, OPTIONS"
_ALLOW_HEADERS = "Content-Type, Authorization, If-None-Match"


def _recording(request: Request) -> RecordingService:
    recording: RecordingService = request.app.state.recording
    return recording


def cors_headers(origin: str | None, own_origin: str, bundle: SiteBundle) -> dict[str, str]:
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


def cors_for(request: Request, bundle: SiteBundle) -> dict[str, str]:
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return cors_headers(request.headers.get("origin"), own, bundle)


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


# Headers the recording handlers read, picked in one pass over the raw list (Starlette's
# Headers.get scans the whole list on every call, and this path would make ten calls).
WANTED = frozenset(
    (
        b"origin",
        b"content-length",
        b"content-type",
        b"user-agent",
        b"host",
        b"accept-language",
        b"sec-gpc",
        b"authorization",
    )
)


def pick(raw: RawHeaders) -> tuple[dict[bytes, str], list[str]]:
    """The first value of each wanted header, and every Sec-GPC line (GPC reads them all)."""
    found: dict[bytes, str] = {}
    gpc: list[str] = []
    for name, value in raw:
        if name in WANTED:
            if name == b"sec-gpc":
                gpc.append(value.decode("latin-1"))
            elif name not in found:
                found[name] = value.decode("latin-1")
    return found, gpc


def submission_of(
    scope: Scope, found: dict[bytes, str], gpc_values: list[str], body: bytes
) -> Submission:
    """A recording POST's body and the request facts its record is enriched with."""
    client = scope.get("client")
    return Submission(
        body=body,
        content_type=found.get(b"content-type", ""),
        peer=client[0] if client else None,
        headers=Headers(raw=scope["headers"]),
        accept_language=found.get(b"accept-language"),
        gpc_values=gpc_values,
        user_agent=found.get(b"user-agent", ""),
        origin=found.get(b"origin", ""),
    )


async def take_consent(scope: Scope, receive: Receive) -> Answer:
    """POST a consent: 201 with a receipt, or a JSON error (with CORS headers when allowed)."""
    recording: RecordingService = scope["app"].state.recording
    raw = scope["headers"]
    found, gpc_values = pick(raw)
    origin = found.get(b"origin")
    cors: RawHeaders = []
    try:
        bundle = recording.site(scope["path_params"]["site"])
        own = f"{scope['scheme']}://{found.get(b'host', '')}"
        cors = raw_headers(cors_headers(origin, own, bundle))
        body = await read_body(receive, found.get(b"content-length"))
        submission = submission_of(scope, found, gpc_values, body)
        result = await recording.record_consent(bundle, submission)
    except (BadRequest, Unavailable) as exc:
        return answer_for(exc, cors)
    if result.duplicate:
        cors.append((b"idempotent-replayed", b"true"))
    answer = {
        "subject_id": result.subject_id,
        "record_id": result.record_id,
        "recorded_at": result.recorded_at,
        "receipt": result.receipt,
    }
    if result.iab is not None:
        answer.update(iab_answer(result.iab))
    return json_answer(201, answer, cors)


post_consent = AnswerEndpoint("post_consent", take_consent)


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


# What the subject API leaves out of each record: facts about the device and the visit that a
# holder of a leaked credential should not learn (review §4d); the stores keep them as proof.
_PRIVATE_FIELDS = ("ip_truncated", "user_agent", "page_url")


def _public(record: Any) -> Any:
    if not isinstance(record, dict):
        return record
    return {k: v for k, v in record.items() if k not in _PRIVATE_FIELDS}


def _authorize_read(recording: RecordingService, request: Request, site: str, subject: str) -> None:
    """The subject's secret (``Authorization: Subject <secret>``) reads at any time; one of the
    subject's receipts reads only while it is fresh. Anything else is 403."""
    secret = secret_from_authorization(request.headers.get("authorization"))
    if secret is not None:
        recording.subject_keys().require(site, subject, secret)
        return
    if recording.receipts is None:
        raise Unavailable("the gateway is starting or shutting down", retry_after=2)
    claims = recording.receipts.verify(_token(request))
    if claims.site != site or claims.subject_id != subject:
        raise BadRequest(
            "forbidden", "the receipt belongs to another subject or site", status_code=403
        )
    check_read_lifetime(claims, time.time())


async def subject_consents(request: Request) -> Response:
    """A subject's current choices and history, for the holder of its secret (or of a fresh
    receipt of its own)."""
    headers: dict[str, str] = {}
    recording = _recording(request)
    try:
        bundle = recording.site(request.path_params["site"])
        headers = cors_for(request, bundle)
        subject_id = request.path_params["subject_id"]
        if not is_subject_id(subject_id):
            # Not an id the gateway derives (an e-mail address, say): nobody's to read.
            raise BadRequest(
                "invalid_subject_id", "a subject id is 32 lower-case hex digits", status_code=404
            )
        _authorize_read(recording, request, bundle.site.id, subject_id)
        history = await recording.history(bundle.site.id, subject_id)
    except (BadRequest, Unavailable) as exc:
        return AnswerResponse(answer_for(exc, raw_headers(headers)))
    current: Any = _public(history.get("current"))
    body = {
        "site": bundle.site.id,
        "subject_id": subject_id,
        "choices": dict(current["choices"]) if current else None,
        "current": current,
        "history": [_public(r) for r in history.get("history", [])],
    }
    return AnswerResponse(json_answer(200, body, raw_headers(headers)))


async def preflight(request: Request) -> Response:
    """CORS preflight: allowed origins only."""
    try:
        bundle = _recording(request).site(request.path_params["site"])
        headers = cors_for(request, bundle)
    except BadRequest as exc:
        return AnswerResponse(answer_for(exc))
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
        Route(paths.CONSENTS, post_consent, methods=["POST"]),
        Route(paths.CONSENTS, preflight, methods=["OPTIONS"]),
        Route(paths.SUBJECT_CONSENTS, subject_consents, methods=["GET"]),
        Route(paths.SUBJECT_CONSENTS, preflight, methods=["OPTIONS"]),
    ]
