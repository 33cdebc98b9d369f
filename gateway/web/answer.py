"""An answer as three plain values (status, raw headers, body) and the two ways to send one."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

RawHeaders = list[tuple[bytes, bytes]]
Answer = tuple[int, RawHeaders, bytes]


def json_answer(status: int, data: Any, headers: RawHeaders | None = None) -> Answer:
    """A JSON answer that no cache keeps; ``headers`` come first (CORS, Retry-After)."""
    content = orjson.dumps(data)
    raw: RawHeaders = [
        *(headers or ()),
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        (b"content-length", str(len(content)).encode()),
    ]
    return status, raw, content


async def send_answer(send: Send, answer: Answer, method: str) -> None:
    """Send an answer; a HEAD request gets the headers (Content-Length included), no body."""
    status, headers, body = answer
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


class AnswerResponse(Response):
    """A Starlette response that sends an ``Answer`` byte for byte, as the front does."""

    def __init__(self, answer: Answer, background: BackgroundTask | None = None) -> None:
        self.answer = answer
        self.status_code, headers, self.body = answer
        self.raw_headers = list(headers)
        self.background = background

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # raw_headers, not the answer's: a handler may have added a header since.
        await send_answer(
            send, (self.status_code, self.raw_headers, self.answer[2]), scope["method"]
        )
        if self.background is not None:
            await self.background()
