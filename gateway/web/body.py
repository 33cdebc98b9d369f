"""A request body read within a bound: the one place the web handlers stream a body."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from gateway.core.errors import BadRequest


async def read_bounded(request: Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes: a Content-Length that is no number is a 400, a body
    declared or streamed beyond ``limit`` a 413 (read no further), a client gone mid-body a
    400."""
    declared = request.headers.get("content-length")
    if declared is not None and not (declared.isascii() and declared.isdigit()):
        raise BadRequest("invalid_content_length", "Content-Length must be a number")
    if declared is not None and int(declared) > limit:
        raise BadRequest("body_too_large", f"body exceeds {limit} bytes", status_code=413)
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise BadRequest("body_too_large", f"body exceeds {limit} bytes", status_code=413)
    except ClientDisconnect as exc:
        raise BadRequest("client_disconnected", "the client went away mid-body") from exc
    return bytes(raw)
