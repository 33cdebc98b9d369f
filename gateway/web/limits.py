"""Request-line and header limits, checked before anything else reads the request.

uvicorn's default parser (httptools) takes a request line up to ~64 KB and headers of any
size and number (an 8 MB header and 5,000 headers were answered 200 in the security review),
and every layer behind it would have to defend itself. These limits are above what browsers,
CDNs and apps send (nginx's default is 8 KB per line) and answer with the JSON error shape.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.web.answer import Answer, send_answer
from gateway.web.errors import error_answer
from gateway.web.middleware import STATS

MAX_TARGET_BYTES = 8 * 1024  # path and query string
MAX_HEADER_BYTES = 8 * 1024  # one header line: name and value
MAX_HEADERS_BYTES = 32 * 1024  # all header lines together
MAX_HEADERS = 100


def check(scope: Scope) -> Answer | None:
    """The 414 or 431 answer for a request past a limit, or None."""
    path: str = scope.get("raw_path") or scope["path"].encode()
    if len(path) + len(scope.get("query_string", b"")) > MAX_TARGET_BYTES:
        return error_answer(
            414, "uri_too_long", f"the path and query exceed {MAX_TARGET_BYTES} bytes"
        )
    headers = scope["headers"]
    if len(headers) > MAX_HEADERS:
        return error_answer(431, "too_many_headers", f"more than {MAX_HEADERS} header lines")
    total = 0
    for name, value in headers:
        size = len(name) + len(value)
        if size > MAX_HEADER_BYTES:
            return error_answer(
                431,
                "header_too_large",
                f"the {name[:40].decode('latin-1')} header exceeds {MAX_HEADER_BYTES} bytes",
                field=name[:40].decode("latin-1"),
            )
        total += size
    if total > MAX_HEADERS_BYTES:
        return error_answer(431, "headers_too_large", f"headers exceed {MAX_HEADERS_BYTES} bytes")
    return None


class RequestLimits:
    """Refuses requests past the limits with 414/431; passes every other request on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            start = time.perf_counter()
            refused = check(scope)
            if refused is not None:
                await send_answer(send, refused, scope["method"])
                STATS.observe("request_limits", refused[0], time.perf_counter() - start)
                return
        await self.app(scope, receive, send)
