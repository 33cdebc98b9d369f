"""Pure ASGI middleware: request metrics and a last-resort JSON error that never leaks a trace."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("gateway.http")

REQUESTS = Counter("gateway_http_requests", "HTTP requests answered", ["endpoint", "status"])
LATENCY = Histogram(
    "gateway_http_request_duration_seconds",
    "Time from request to last response byte",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)


class MetricsMiddleware:
    """Counts requests per endpoint and status; label values come from a fixed set of names."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Bound children: labels() hashes and locks on every call, too slow for the hot path.
        self._counters: dict[tuple[str, int], Any] = {}
        self._histograms: dict[str, Any] = {}

    def _observe(self, name: str, status: int, seconds: float) -> None:
        counter = self._counters.get((name, status))
        if counter is None:
            counter = self._counters[(name, status)] = REQUESTS.labels(name, str(status))
        histogram = self._histograms.get(name)
        if histogram is None:
            histogram = self._histograms[name] = LATENCY.labels(name)
        counter.inc()
        histogram.observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await _internal_error(send)
        finally:
            endpoint: Any = scope.get("endpoint")
            name = getattr(endpoint, "__name__", "unmatched")
            self._observe(name, status, time.perf_counter() - start)


async def _internal_error(send: Send) -> None:
    body = orjson.dumps({"error": "internal_error", "detail": "the gateway failed; it is logged"})
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
