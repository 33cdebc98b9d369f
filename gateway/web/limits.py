"""Request-line and header limits, checked before anything else reads the request.

uvicorn's default parser (httptools) takes a request line up to ~64 KB and headers of any
size and number (an 8 MB header and 5,000 headers were answered 200 in the security review),
and every layer behind it would have to defend itself. These limits are above what browsers,
CDNs and apps send (nginx's default is 8 KB per line) and answer with the JSON error shape.
The front (gateway/web/front.py), the outermost layer, checks them on every request.
"""

from __future__ import annotations

import time
from itertools import chain

from starlette.types import Scope, Send

from gateway.web.answer import Answer, send_answer
from gateway.web.errors import error_answer
from gateway.web.middleware import STATS

MAX_TARGET_BYTES = 8 * 1024  # path and query string
MAX_HEADER_BYTES = 8 * 1024  # one header line: name and value
MAX_HEADERS_BYTES = 32 * 1024  # all header lines together
MAX_HEADERS = 100


def check(scope: Scope) -> Answer | None:
    """The 414 or 431 answer for a request past a limit, or None."""
    path = scope.get("raw_path") or scope["path"].encode()
    if len(path) + len(scope.get("query_string", b"")) > MAX_TARGET_BYTES:
        return error_answer(
            414, "uri_too_long", f"the path and query exceed {MAX_TARGET_BYTES} bytes"
        )
    headers = scope["headers"]
    if len(headers) > MAX_HEADERS:
        return error_answer(431, "too_many_headers", f"more than {MAX_HEADERS} header lines")
    # Summed in C: below one line's limit in all, no line can be over it (the usual case).
    total = sum(map(len, chain.from_iterable(headers)))
    if total <= MAX_HEADER_BYTES:
        return None
    for name, value in headers:
        if len(name) + len(value) > MAX_HEADER_BYTES:
            return error_answer(
                431,
                "header_too_large",
                f"the {name[:40].decode('latin-1')} header exceeds {MAX_HEADER_BYTES} bytes",
                field=name[:40].decode("latin-1"),
            )
    if total > MAX_HEADERS_BYTES:
        return error_answer(431, "headers_too_large", f"headers exceed {MAX_HEADERS_BYTES} bytes")
    return None


async def refuse(scope: Scope, send: Send, answer: Answer) -> None:
    """Send a 414/431 and count it in the request metrics."""
    start = time.perf_counter()
    await send_answer(send, answer, scope["method"])
    STATS.observe("request_limits", answer[0], time.perf_counter() - start)
