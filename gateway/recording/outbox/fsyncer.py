"""fsync a file from a helper process, with completions delivered on the event loop.

The outbox's `power` durability fsyncs its WAL after every group commit. From a thread, each
fsync ends with the thread taking the GIL back from the busy event loop, which keeps it up to
the switch interval (5 ms) and then pays a forced hand-off; measured on the recording path,
those hand-offs cost ~6% of throughput and ~2 ms of p99 even with the fsync itself skipped.
A child process holds no GIL: the loop writes one byte to ask for an fsync and reads the
answer when its pipe turns readable, like any other socket.

fsync flushes the file's (inode's) dirty pages whichever process wrote them, so the child's
fsync of its own descriptor makes the parent's writes durable. The child exits when its
stdin closes (the parent closed it or died), so it never outlives the gateway.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("gateway.outbox")

Done = Callable[[OSError | None], None]

# The child: one byte in per fsync asked, one line out per answer ("0" or the errno). Bytes
# that arrived together were all sent after their writes, so one fsync answers them all.
# -I -S keep its start-up to a few milliseconds and its environment out of it.
_CHILD = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
path, fd = sys.argv[1], None
while asked := os.read(0, 256):
    try:
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        answer = 0
    except FileNotFoundError:
        answer = 0  # no such file yet: nothing was written to it
    except OSError as exc:
        answer = exc.errno or 5
    os.write(1, b"%d\n" % answer * len(asked))
"""


class Fsyncer:
    """Asks a child process to fsync ``path``; ``request`` calls back on the loop."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending: collections.deque[Done] = collections.deque()
        self._buffer = b""
        self._reading = False  # the loop watches the child's stdout

    def start(self) -> None:
        """Start the child (blocking for a few ms; the outbox calls it once, off the loop)."""
        proc = subprocess.Popen(  # noqa: S603 -- our own interpreter and program
            [sys.executable, "-I", "-S", "-c", _CHILD, str(self.path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True,
        )  # fmt: skip
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        self._proc = proc

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver answers on ``loop`` (the outbox's loop, where every caller runs)."""
        self._loop = loop
        if self._proc is not None and self._proc.stdout is not None:
            loop.add_reader(self._proc.stdout.fileno(), self._readable)
            self._reading = True

    def request(self, done: Done) -> None:
        """fsync the file; ``done(None)`` once it is durable, ``done(error)`` if it is not."""
        if self._proc is None:  # never started, or found dead: start it again
            try:
                self._restart()
            except OSError as exc:
                log.error("cannot start the outbox fsync helper: %s", exc)
                done(exc)
                return
        stdin = self._proc.stdin if self._proc is not None else None
        self._pending.append(done)
        try:
            if stdin is None:
                raise BrokenPipeError("the helper has no stdin")
            os.write(stdin.fileno(), b"s")
        except OSError as exc:
            self._failed(f"the fsync helper is unavailable: {exc}")

    def ensure(self) -> None:
        """Start the helper again if it is gone (on the loop); raises OSError if it cannot.

        The outbox's supervised watch calls this, so a helper that died is replaced before
        the next commit needs it, and one that cannot start shows as a task that is down."""
        if self._proc is None and self._loop is not None:
            self._restart()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _restart(self) -> None:
        assert self._loop is not None
        self._detach()
        log.warning("starting the outbox fsync helper")
        self.start()
        self.attach(self._loop)

    def _readable(self) -> None:
        stdout = self._proc.stdout if self._proc is not None else None
        if stdout is None:
            return
        try:
            data = os.read(stdout.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._failed(f"reading from the fsync helper failed: {exc}")
            return
        if not data:
            self._failed("the fsync helper exited")
            return
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not self._pending:
                log.error("the fsync helper answered a request nobody made")
                continue
            done = self._pending.popleft()
            code = int(line or b"5")
            done(None if code == 0 else OSError(code, os.strerror(code), str(self.path)))

    def _failed(self, why: str) -> None:
        """The child is gone: every fsync still waiting fails (never a false success)."""
        log.error("%s", why)
        self._detach()
        pending, self._pending = self._pending, collections.deque()
        for done in pending:
            done(OSError(why))

    def _detach(self) -> None:
        proc, self._proc = self._proc, None
        self._buffer = b""
        if proc is None:
            return
        if self._reading and self._loop is not None and proc.stdout is not None:
            self._loop.remove_reader(proc.stdout.fileno())
        self._reading = False
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def stop_reading(self) -> None:
        """Stop watching the child's answers (on the loop's thread, before ``close``)."""
        proc = self._proc
        if self._reading and self._loop is not None and proc is not None and proc.stdout:
            self._loop.remove_reader(proc.stdout.fileno())
        self._reading = False

    def close(self) -> None:
        """Stop the child: closing its stdin ends its loop; it is killed if it lingers.

        Blocks until it has exited; from another thread, call ``stop_reading`` first."""
        proc = self._proc
        if proc is None:
            return
        self.stop_reading()
        self._proc = None
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
