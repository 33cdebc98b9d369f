"""The outermost ASGI front: the hot routes answered straight from the scope.

Banner requests (config, banner, consent.js) and consent POSTs are nearly all of the traffic.
Their endpoints are ASGI apps of their own (gateway/web/endpoint.py); the front finds them in
the app's one route table and calls them directly, outside Starlette's middleware stack and
routing, matching with the routes' own patterns and counting them in the request metrics under
the routes' endpoint names. Everything else goes on to the Starlette app, untouched.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from starlette.convertors import StringConvertor
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.web.accesslog import AccessLog
from gateway.web.endpoint import AnswerEndpoint
from gateway.web.limits import check, refuse
from gateway.web.middleware import STATS

HotRoute = tuple[re.Pattern[str], AnswerEndpoint]


def route_path(scope: Scope) -> str:
    """The path the routes match: without the ``root_path`` prefix (as Starlette's router)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        if path == root:
            return ""
        if path[len(root)] == "/":
            return path[len(root) :]
    return path


def hot_routes(routes: Iterable[BaseRoute]) -> dict[str, list[HotRoute]]:
    """Per method, the pattern and endpoint of every route whose endpoint the front can call.

    Only routes with plain string parameters: their matched text is the parameter's value,
    so the front needs none of the router's conversions.
    """
    table: dict[str, list[HotRoute]] = {}
    for route in routes:
        if (
            isinstance(route, Route)
            and isinstance(route.endpoint, AnswerEndpoint)
            and all(isinstance(c, StringConvertor) for c in route.param_convertors.values())
        ):
            for method in sorted(route.methods or ()):
                table.setdefault(method, []).append((route.path_regex, route.endpoint))
    return table


class HotPaths:
    """Refuses requests past the limits (gateway/web/limits.py), answers the hot routes
    itself, and passes every other request to ``app`` untouched."""

    def __init__(
        self, app: ASGIApp, routes: Iterable[BaseRoute], access: AccessLog | None = None
    ) -> None:
        self.app = app
        self.routes = hot_routes(routes)
        # The request log (None: off): the hot endpoints log their own answers, refusals go
        # through it as a wrapper; ``app`` is wrapped by it already.
        self.access = access

    def match(self, scope: Scope) -> tuple[AnswerEndpoint, dict[str, str]] | None:
        """The endpoint and path parameters the front would answer ``scope`` with, or None."""
        candidates = self.routes.get(scope["method"])
        if candidates:
            path = route_path(scope) if scope.get("root_path") else scope["path"]
            for pattern, endpoint in candidates:
                found = pattern.match(path)
                if found is not None:
                    return endpoint, found.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = check(scope)  # request-line and header limits, for every route
            if refused is not None:
                if self.access is None:
                    await refuse(scope, send, refused)
                else:

                    async def refusal(scope: Scope, receive: Receive, send: Send) -> None:
                        await refuse(scope, send, refused)

                    await self.access.around(refusal, scope, receive, send)
                return
            hit = self.match(scope)
            if hit is not None:
                start = time.perf_counter()
                endpoint, scope["path_params"] = hit
                scope["endpoint"] = endpoint
                status = await endpoint.respond(scope, receive, send, self.access, start)
                STATS.observe(endpoint.__name__, status, time.perf_counter() - start)
                return
        await self.app(scope, receive, send)
