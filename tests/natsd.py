"""NATS for the JetStream tests: the machine's shared server, or a private one to restart.

The shared server (127.0.0.1:4222, a system service) is only used with stream names and
subjects unique to the test, deleted afterwards; a test that restarts or kills NATS starts
its own ``nats-server -js`` on a free port with a temporary store directory instead.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
from nats.js import JetStreamContext

from tests.helpers import unavailable
from tests.procs import free_port, stop

SHARED_URL = "nats://127.0.0.1:4222"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def need(condition: bool, reason: str) -> None:
    """Skip without NATS, except under CI=true, where a missing server fails the test."""
    if not condition:
        unavailable(reason)


def shared_url() -> str:
    need(_listening(4222), "no NATS server at 127.0.0.1:4222")
    return SHARED_URL


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class NatsServer:
    """A private ``nats-server -js`` the test may stop, kill and start again on the same store."""

    def __init__(self, store: Path) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        need(Path(binary).exists(), "nats-server is not installed")
        self.binary = binary
        self.store = store
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            assert self.process.poll() is None, "nats-server exited at start-up"
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@asynccontextmanager
async def jetstream(url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=5)
    try:
        yield nc.jetstream(timeout=10)
    finally:
        await nc.close()


async def read_stream(js: JetStreamContext, stream: str) -> list[Any]:
    """Every message of a stream, in order, through a fresh durable pull consumer."""
    info = await js.stream_info(stream)
    total = info.state.messages
    sub = await js.pull_subscribe("", durable=unique("reader"), stream=stream)
    messages: list[Any] = []
    while len(messages) < total:
        batch = await sub.fetch(min(500, total - len(messages)), timeout=5)
        for msg in batch:
            await msg.ack()
        messages.extend(batch)
    await sub.unsubscribe()
    return messages


async def wait_for_count(js: JetStreamContext, stream: str, count: int, within: float) -> int:
    deadline = time.monotonic() + within
    while True:
        messages = (await js.stream_info(stream)).state.messages
        if messages >= count or time.monotonic() > deadline:
            return messages
        await asyncio.sleep(0.1)


class AckDelayProxy:
    """A loopback proxy in front of NATS that holds server-to-client bytes for ``delay``
    seconds (so publish acknowledgements arrive late: a gateway killed meanwhile has published
    records it never saw acknowledged) and keeps every client-to-server byte, so a test can
    count how often each ``Nats-Msg-Id`` was sent."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = free_port()
        self.sent = bytearray()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def msg_id_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for match in re.finditer(rb"Nats-Msg-Id: ([^\r\n]+)", bytes(self.sent)):
            key = match.group(1).decode()
            counts[key] = counts.get(key, 0) + 1
        return counts

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        for coro in (
            self._forward(reader, up_writer, 0.0),
            self._forward(up_reader, writer, self.delay),
        ):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _forward(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not chunk:
                    break
                dst.write(chunk)
                await dst.drain()

        sender = asyncio.create_task(deliver())
        try:
            while chunk := await src.read(65536):
                if delay == 0.0:
                    self.sent.extend(chunk)
                await queue.put((time.monotonic() + delay, chunk))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            await queue.put((time.monotonic() + delay, b""))
            try:
                await asyncio.wait_for(sender, timeout=delay + 5)
            except (ConnectionError, TimeoutError, asyncio.CancelledError):
                sender.cancel()
            dst.close()
