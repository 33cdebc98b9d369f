"""The outermost ASGI front: the two hot paths answered straight from the scope.

Banner requests (config, banner, consent.js) and consent POSTs are nearly all of the traffic.
They are answered here, outside Starlette's middleware stack, routing and request objects, and
counted in the request metrics here, with the endpoint names the routes carry. Everything else
goes on to the Starlette app, and so does a banner request that ends in an error, which the
routes answer with the same function and a JSON error.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.core.errors import GatewayError
from gateway.web import public, records
from gateway.web.middleware import STATS, internal_error

log = logging.getLogger("gateway.http")

_RECORD_ENDPOINT = records.post_consent.__name__
_SERVE_ENDPOINTS = {path: endpoint.__name__ for path, endpoint in public.ENDPOINTS.items()}


class HotPaths:
    """Answers the hot paths itself; passes every other request to ``app`` untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            if method == "POST":
                match = records.RECORD_PATH.match(scope["path"])
                if match is not None:
                    await self._record(match.group(1), scope, receive, send)
                    return
            elif method == "GET" or method == "HEAD":
                match = public.PATH.match(scope["path"])
                if match is not None and await self._serve(
                    match.group(1), match.group(2), scope, send
                ):
                    return
        await self.app(scope, receive, send)

    async def _record(self, site_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        client = scope.get("client")
        try:
            status, headers, body = await records.take_consent(
                scope["app"].state,
                site_id,
                client[0] if client else None,
                scope["headers"],
                scope["scheme"],
                receive,
            )
        except Exception:
            # take_consent answers every expected failure itself; this is a bug: log it and
            # answer a JSON 500 that leaks nothing.
            log.exception("unhandled error recording a consent for site %.64r", site_id)
            STATS.observe(_RECORD_ENDPOINT, 500, time.perf_counter() - start)
            await internal_error(send)
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        STATS.observe(_RECORD_ENDPOINT, status, time.perf_counter() - start)

    async def _serve(self, site_id: str, path: str, scope: Scope, send: Send) -> bool:
        """Answer a banner request; False when it must go on to the routes (errors)."""
        start = time.perf_counter()
        client = scope.get("client")
        state: Any = scope["app"].state
        try:
            status, headers, body = public.answer(
                state.gateway,
                public.KINDS[path],
                site_id,
                client[0] if client else None,
                Headers(scope=scope),
                scope.get("query_string", b""),
                scope["scheme"],
            )
        except GatewayError:
            return False  # the route answers it, with the JSON error, and counts it
        except Exception:
            log.exception("unhandled error serving %s for site %.64r", path, site_id)
            STATS.observe(_SERVE_ENDPOINTS[path], 500, time.perf_counter() - start)
            await internal_error(send)
            return True
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
        STATS.observe(_SERVE_ENDPOINTS[path], status, time.perf_counter() - start)
        return True
