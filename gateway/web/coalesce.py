"""One write per response: the response head waits for the first body bytes.

uvicorn writes a response's head when the app sends ``http.response.start`` and its body when
the app sends ``http.response.body``: two ``send()`` system calls for every response, and the
first was the single most expensive line of a served banner (a sixth of its CPU). Through
this transport the head is held and goes out with the body in one vectored write.

Nothing is held past the response: the head leaves with the next write, or when the response
completes without a body (HEAD, an empty 304), or when the connection closes. Interim
responses (``100 Continue``) are never held: the client waits for them before its body.
"""

from __future__ import annotations

import asyncio
from typing import Any

# The start of a response head as uvicorn writes it; an interim 1xx head is not held.
_HEAD = b"HTTP/1.1 "
_INTERIM = b"HTTP/1.1 1"


class CoalescingTransport(asyncio.Transport):
    """Wraps a connection's transport; holds one response head until the next write."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._held: bytes | None = None

    # Writes

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif data[:9] == _HEAD and data[:10] != _INTERIM and data[-4:] == b"\r\n\r\n":
            self._held = bytes(data)
        else:
            self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self.flush()
        self._transport.writelines(list_of_data)

    def flush(self) -> None:
        """Send a held head now (the response ended without a body, or the connection ends)."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    # Everything else is the wrapped transport's

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()
