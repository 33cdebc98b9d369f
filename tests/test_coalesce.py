"""The coalescing transport: a response's head and body leave in one write, and nothing is
held past the response (gateway/web/coalesce.py). Over real sockets: tests/test_slow_clients.py."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.web.coalesce import CoalescingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


class Recording(asyncio.Transport):
    """A transport that records each call that would be a system call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(("writelines", [bytes(d) for d in list_of_data]))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


def test_head_and_body_leave_in_one_vectored_write() -> None:
    real = Recording()
    transport = CoalescingTransport(real)
    transport.write(HEAD)
    assert real.calls == []  # held
    transport.write(b"hello")
    assert real.calls == [("writelines", [HEAD, b"hello"])]


def test_a_head_without_body_leaves_on_flush_and_before_close() -> None:
    real = Recording()
    transport = CoalescingTransport(real)
    transport.write(HEAD)
    transport.flush()
    assert real.calls == [("write", HEAD)]
    transport.write(HEAD)
    transport.close()
    assert real.calls[1:] == [("write", HEAD), ("close", None)]


def test_interim_continue_and_body_chunks_are_never_held() -> None:
    real = Recording()
    transport = CoalescingTransport(real)
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    transport.write(b"a body chunk")
    transport.write(b"HTTP/1.1 200 OK but a body, not a head")
    assert [call for call, _ in real.calls] == ["write", "write", "write"]


def test_abort_drops_a_held_head() -> None:
    """An aborted connection sends nothing more, not even a held head."""
    real = Recording()
    aborted: list[bool] = []
    real.abort = lambda: aborted.append(True)  # type: ignore[method-assign]
    transport = CoalescingTransport(real)
    transport.write(HEAD)
    transport.abort()
    transport.flush()
    assert real.calls == [] and aborted == [True]


def test_everything_else_is_the_wrapped_transports() -> None:
    real = Recording()
    transport = CoalescingTransport(real)
    assert transport.is_closing() is False
    real.closing = True
    assert transport.is_closing() is True
