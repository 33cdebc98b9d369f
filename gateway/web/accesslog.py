"""The request log: JSON lines with what operators need, never an address or a secret.

``consent-gateway serve`` turns uvicorn's own access log off (it cost about half the serving
throughput) and logs through ``AccessLog`` as ``GATEWAY_ACCESS_LOG`` says. Receipts once
travelled as ``?receipt=`` (13 of them in one review's log); the gateway no longer reads
credentials from the query, but a client may still put one there, so a logged query keeps
only the values of the serving parameters and shortens the rest to their names. The
``RedactQuery`` filter does the same for uvicorn's log where someone runs the app under
uvicorn with its access log on (``uvicorn --factory gateway.app:factory``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Query parameters whose values are safe and useful in a log line.
KEPT = frozenset({"lang", "region", "site", "rule", "gpc", "format", "group", "from", "to"})
MAX_VALUE = 32
MAX_PARAMS = 8
MAX_PATH = 256
MODES = ("off", "errors", "sampled", "all")


def redact_target(target: str) -> str:
    """``/path?lang=de&receipt=v1.x`` → ``/path?lang=de&receipt=…``."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = []
    for name, value in pairs[:MAX_PARAMS]:
        name = quote(name[:MAX_VALUE], safe="")
        if name in KEPT:
            shown.append(f"{name}={quote(value[:MAX_VALUE], safe='')}")
        else:
            shown.append(f"{name}=…")
    if len(pairs) > MAX_PARAMS:
        shown.append(f"…{len(pairs) - MAX_PARAMS} more")
    return f"{path}?{'&'.join(shown)}"


class RedactQuery(logging.Filter):
    """Rewrites the target in uvicorn's access records: (client, method, target, version,
    status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], redact_target(args[2]), args[3], args[4])
        return True


def install() -> None:
    """Attach the filter to uvicorn's access logger (idempotent)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuery) for f in logger.filters):
        logger.addFilter(RedactQuery())


# ---- the gateway's own request log (GATEWAY_ACCESS_LOG) ----------------------------------

LOGGER = "gateway.access"
# A request id the client (or the proxy in front) sent is kept when it is this plain.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_REQUEST_ID_HEADER = b"x-request-id"


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The request's ``X-Request-ID`` when it is plain, else a new random one."""
    for name, value in headers:
        if name == _REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return os.urandom(8).hex()


def _query_names(query: bytes) -> str | None:
    """The query as redact_target shows it: serving values kept, every other value dropped."""
    if not query:
        return None
    return redact_target("?" + query.decode("latin-1"))[1:]


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")


class AccessLog:
    """Pure ASGI: one JSON line for each request the mode picks, written after its last byte.

    ``errors`` logs status 400 and above, ``sampled`` adds a random share of the rest,
    ``all`` logs every request. Whether a request is logged is known at its response's start
    (or, for a sampled one, before it runs); only then is the line's work done (the region
    lookup, the request id, counting bytes). A logged answer carries its ``X-Request-ID``, so
    a client's error report finds the line. ``region_of(scope)`` names the visitor's region
    (country or country-subdivision), never the address it came from.

    As a wrapper (``__call__``, ``around``) it costs one wrapped ``send`` per request. The hot
    routes, which hold their whole answer before sending it, are not wrapped: they ask
    ``picks`` and ``tag`` and write ``line`` themselves (gateway/web/endpoint.py), so a
    served banner's log costs one comparison unless it is logged.
    """

    def __init__(
        self,
        app: ASGIApp,
        mode: str,
        sample: float = 0.0,
        *,
        region_of: Callable[[Scope], str | None] = lambda scope: None,
        write: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in MODES or mode == "off":
            raise ValueError(f"access log mode {mode!r}: expected errors, sampled or all")
        self.app = app
        self.threshold = 0 if mode == "all" else 400
        self.sample = sample if mode == "sampled" else 0.0
        self.region_of = region_of
        self.write = write or logging.getLogger(LOGGER).info

    def picks(self, status: int) -> bool:
        """Whether an answer with ``status`` gets a line (for ``sampled``, a draw)."""
        # Sampling picks log lines, not secrets: the module's generator is enough.
        return status >= self.threshold or (
            self.sample > 0.0 and random.random() < self.sample  # noqa: S311
        )

    def tag(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> tuple[str, list[Any]]:
        """The request id of a logged answer and its headers naming it."""
        rid = request_id(scope["headers"])
        return rid, [*headers, (b"x-request-id", rid.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.around(self.app, scope, receive, send)

    async def around(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Run ``app`` with its answer logged as the mode says."""
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        # Sampling picks log lines, not secrets: the module's generator is enough.
        sampled = self.sample and random.random() < self.sample  # noqa: S311
        threshold = 0 if sampled else self.threshold
        # status, bytes sent, request id (None: not logged)
        seen: list[Any] = [500, 0, None]

        # A plain function returning send's awaitable: no coroutine of its own per message.
        def logged_send(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                status = seen[0] = message["status"]
                if status >= threshold:
                    rid = seen[2] = request_id(scope["headers"])
                    headers = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
                    message = {**message, "headers": headers}
            elif seen[2] is not None:
                seen[1] += len(message.get("body", b""))
            return send(message)

        try:
            await app(scope, receive, logged_send)
        finally:
            if seen[2] is not None or seen[0] >= threshold:
                self.line(scope, start, *seen)

    def line(self, scope: Scope, start: float, status: int, sent: int, rid: str | None) -> None:
        """Write the line of a request that started at ``start`` (``time.perf_counter``)."""
        params = scope.get("path_params") or {}
        site = params.get("site")
        try:
            region = self.region_of(scope)
        except Exception:  # a log line never fails a request
            region = None
        elapsed = time.perf_counter() - start
        line = {
            "time": _utc(time.time() - elapsed),
            "request_id": rid or request_id(scope["headers"]),
            "method": scope.get("method"),
            "path": scope.get("path", "")[:MAX_PATH],
            "query": _query_names(scope.get("query_string", b"")),
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "bytes": sent,
            "site": site[: MAX_VALUE * 2] if isinstance(site, str) else None,
            "region": region,
        }
        self.write(orjson.dumps(line).decode())


def region_from_app(scope: Scope) -> str | None:
    """The visitor's region as the serving path locates it (CDN header or geo database)."""
    app = scope.get("app")
    gateway = getattr(getattr(app, "state", None), "gateway", None)
    if gateway is None:
        return None
    client = scope.get("client")
    peer = client[0] if client else None
    code: str | None = gateway.locator.locate(peer, Headers(raw=scope["headers"]))[1].code
    return code


def configure_output() -> None:
    """Access lines go to stdout as they are (JSON lines); the app's own logs stay on stderr."""
    logger = logging.getLogger(LOGGER)
    if not any(getattr(h, "access_lines", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.access_lines = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
