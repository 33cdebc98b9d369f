"""Refuses request framings the gateway does not implement: transfer codings but chunked.

The HTTP parser dechunks ``Transfer-Encoding: gzip, chunked`` and hands the app the still
gzipped bytes as if they were the body (494 such records were accepted in one review). The
answer is a 400, not RFC 9112's suggested 501: it is the client's framing that is wrong, and
monitoring reads a 5xx as the gateway failing (a client could raise alerts at will).
Outermost ASGI wrapper: one pass over the raw header list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.web.accesslog import AccessLog

_BODY = orjson.dumps({
    "error": "unsupported_transfer_coding",
    "detail": "only the chunked transfer coding is accepted",
    "field": "Transfer-Encoding",
})  # fmt: skip
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"connection", b"close"),
    (b"content-length", str(len(_BODY)).encode()),
]


def unsupported_coding(headers: list[tuple[bytes, bytes]]) -> bool:
    """True if a Transfer-Encoding line names a coding other than chunked."""
    for name, value in headers:
        if name == b"transfer-encoding":
            for coding in value.split(b","):
                if coding.strip().lower() != b"chunked":
                    return True
    return False


class TransferCodings:
    """Answers 400 to a request with a transfer coding other than chunked."""

    def __init__(self, app: ASGIApp, access: AccessLog | None = None) -> None:
        self.app = app
        self.access = access  # the request log, when on: refusals are logged too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and unsupported_coding(scope["headers"]):
            if self.access is None:
                await _refuse(scope, receive, send)
            else:
                await self.access.around(_refuse, scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 400, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
