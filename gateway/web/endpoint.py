"""The endpoint type that both the front and the routes call.

The hot endpoints are ASGI apps of their own: Starlette's router calls such an endpoint as it
is (no request object), and the front (gateway/web/front.py) calls the very same object
straight from the scope, so the two paths cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from gateway.web.answer import Answer
from gateway.web.errors import INTERNAL_ERROR

if TYPE_CHECKING:
    from gateway.web.accesslog import AccessLog

log = logging.getLogger("gateway.http")

Responder = Callable[[Scope, Receive], Awaitable[Answer]]


class AnswerEndpoint:
    """A route endpoint that is its own ASGI app; ``respond`` returns the status it sent.

    ``answer`` renders every expected failure as an answer itself (gateway/web/errors.py);
    whatever else it raises is a bug: logged here, answered with a JSON 500 that leaks nothing.
    """

    def __init__(self, name: str, answer: Responder) -> None:
        self.__name__ = name  # the endpoint label in the request metrics
        self._answer = answer

    async def respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        access: AccessLog | None = None,
        start: float = 0.0,
    ) -> int:
        """Answer the request; with ``access`` (the request log, when on), log the answer if
        the log's mode picks it, ``start`` being when the request reached the front."""
        try:
            answer = await self._answer(scope, receive)
        except Exception:
            log.exception("unhandled error in %s for %.200r", self.__name__, scope.get("path"))
            answer = INTERNAL_ERROR
        status, headers, body = answer
        if scope["method"] == "HEAD":
            body = b""
        if access is None or not access.picks(status):
            # send_answer's two messages, inline: this is every hot request's last step.
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return status
        rid, headers = access.tag(scope, headers)
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            access.line(scope, start, status, len(body), rid)
        return status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.respond(scope, receive, send)
