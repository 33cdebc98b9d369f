"""Slow and idle connections time out, and the number of connections stays under a cap.

uvicorn closes a kept-alive connection after ``timeout_keep_alive``, but a connection that
never sends a request, or sends its head a byte at a time, stayed open for good: 600 idle
sockets stopped all service under a 512-descriptor limit. This protocol adds

- a head timeout: from connecting (or from the first byte of a kept-alive connection's next
  request) to the end of the request head;
- a body timeout: from the end of the head to the end of the body;
- a connection cap: past it, a new connection first evicts the connection that has waited
  longest without a complete request head (idle or slow), and is itself refused when every
  connection is busy with a request, so idle sockets cannot lock everyone else out;
- a cap on the bytes of one request head, before the parser buffers it (httptools took an
  8 MB header): the app's own, lower limits (414/431) answer first; this is the backstop.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.core.settings import Settings
from gateway.web.coalesce import CoalescingTransport

log = logging.getLogger("gateway.connections")

# Descriptors kept for everything that is not a client connection: the outbox and store
# files, the fsync helper's pipes, the geo database, template files, log files.
RESERVED_DESCRIPTORS = 128
MAX_HEAD_BYTES = 64 * 1024  # request line and headers of one request, as received


def default_max_connections() -> int:
    """The cap when none is set: three quarters of the descriptors left after the reserve."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, (soft - RESERVED_DESCRIPTORS) * 3 // 4)


def effective_max_connections(configured: int) -> int:
    """The configured cap, or the default; never above the descriptor limit's budget."""
    ceiling = default_max_connections()
    if configured <= 0:
        return ceiling
    if configured > ceiling:
        log.warning(
            "GATEWAY_MAX_CONNECTIONS=%d is above what the open-file limit allows; "
            "using %d (raise `ulimit -n` to allow more)",
            configured,
            ceiling,
        )
        return ceiling
    return configured


def _raw_error(status: bytes, code: str, detail: str) -> bytes:
    body = orjson.dumps({"error": code, "detail": detail})
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


TOO_LARGE_RESPONSE = _raw_error(
    b"431 Request Header Fields Too Large",
    "headers_too_large",
    f"the request head exceeds {MAX_HEAD_BYTES} bytes",
)
TIMEOUT_RESPONSE = _raw_error(
    b"408 Request Timeout", "request_timeout", "the request was not sent in time"
)
FULL_RESPONSE = _raw_error(
    b"503 Service Unavailable", "unavailable", "too many connections; try again"
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head and body timeouts and a connection cap.

    The limits come from class attributes that ``configure()`` sets once per server, with
    the server's table of connections waiting for a request head, oldest first.

    A timeout is a deadline on the connection, not a timer: arming one is storing a number,
    and one sweep per server (``sweep_every``) closes the connections past theirs. Two timers
    armed and cancelled per request (and uvicorn's keep-alive timer, which this protocol's
    idle deadline replaces) cost more than the rest of a served banner's own work. The
    sweep closes a connection at most ``sweep_every`` after its deadline.
    """

    head_timeout = 10.0
    body_timeout = 10.0
    max_connections = 1000
    waiting: ClassVar[dict[GuardedHttpToolsProtocol, None]] = {}
    sweep_every = 1.0
    # The loop the sweep runs on and the server's connections it looks at.
    sweeping: ClassVar[list[tuple[asyncio.AbstractEventLoop, set[Any]]]] = []

    @classmethod
    def configure(
        cls, head_timeout: float, body_timeout: float, max_connections: int, keep_alive: float
    ) -> type[GuardedHttpToolsProtocol]:
        """A subclass carrying these limits (uvicorn builds protocols from a class)."""
        attrs = {
            "head_timeout": head_timeout,
            "body_timeout": body_timeout,
            "max_connections": max_connections,
            "waiting": {},
            "sweeping": [],
            # A quarter of the shortest timeout, so none is overrun by more than a quarter.
            "sweep_every": min(1.0, max(0.05, min(head_timeout, body_timeout, keep_alive) / 4)),
        }
        return type(cls.__name__, (cls,), attrs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: float | None = None  # when the awaited bytes are overdue
        self._idle = False  # between a response and the next request's first byte
        self._started_request = False  # a byte of the awaited request head has arrived
        self._head_bytes = 0  # bytes received since the awaited request head began

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._make_room():
            log.warning(
                "connection cap (%d) reached with every connection busy; refusing one",
                self.max_connections,
            )
            transport.write(FULL_RESPONSE)
            transport.close()
            return
        self.transport = CoalescingTransport(transport)  # head and body in one write
        self._set_waiting(True)
        self._arm(self.head_timeout)
        if not self.sweeping or self.sweeping[0][0] is not self.loop:
            self.sweeping[:] = [(self.loop, self.connections)]
            self.loop.call_later(self.sweep_every, self._sweep, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        self._set_waiting(False)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._idle:
            # First byte after a response: the keep-alive wait ends, the head timeout starts.
            self._idle = False
            self._arm(self.head_timeout)
        if self in self.waiting:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._set_waiting(False)
                self.transport.write(TOO_LARGE_RESPONSE)
                self.transport.close()
                return
        super().data_received(data)

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._started_request = True
        if self._deadline is None:
            self._arm(self.head_timeout)

    def on_headers_complete(self) -> None:
        self._set_waiting(False)
        self._arm(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._deadline = None  # the app has the request: no read is awaited
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """uvicorn's, with the keep-alive wait as a deadline rather than a timer."""
        self.transport.flush()  # type: ignore[attr-defined]  # a head without a body
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            # Idle until the next request; the keep-alive timeout guards this wait.
            self._idle = True
            self._started_request = False
            self._set_waiting(True)
            self._arm(self.timeout_keep_alive)

    # Deadlines and the cap

    def _set_waiting(self, waiting: bool) -> None:
        self.waiting.pop(self, None)
        self._head_bytes = 0
        if waiting:
            self.waiting[self] = None  # to the end: the most recent waiter

    def _arm(self, seconds: float) -> None:
        self._deadline = self.loop.time() + seconds

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        """Close every connection past its deadline; then again in ``sweep_every``."""
        if not cls.sweeping or cls.sweeping[0][0] is not loop or loop.is_closed():
            return  # a later server's loop took over
        now = loop.time()
        for conn in list(cls.sweeping[0][1]):
            deadline = getattr(conn, "_deadline", None)
            if deadline is not None and deadline <= now:
                conn._timed_out()
        loop.call_later(cls.sweep_every, cls._sweep, loop)

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._started_request and self in self.waiting:
            # A partial head: say why before closing (a client that sent nothing gets nothing).
            self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request head; False if none."""
        for oldest in self.waiting:
            oldest._set_waiting(False)
            oldest.connections.discard(oldest)  # its connection_lost comes on a later turn
            oldest.transport.close()
            return True
        return False


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run() options for these limits: the guarded protocol and the keep-alive timeout.

    uvicorn's ``limit_concurrency`` is not used: it answers 503 once that many connections are
    open, idle ones included, which is the lock-out the cap here avoids by evicting them.
    """
    cap = effective_max_connections(settings.max_connections)
    protocol = GuardedHttpToolsProtocol.configure(
        settings.header_timeout, settings.body_timeout, cap, settings.keepalive_timeout
    )
    return {"http": protocol, "timeout_keep_alive": settings.keepalive_timeout}
