"""Keeping the outbox's WAL bounded under any load, and its file small after delivery.

Each commit in WAL mode appends pages to the WAL, and SQLite starts the WAL over only once a
checkpoint has copied every frame back into the database with no write in between. The
outbox writes without pause under load, so PASSIVE checkpoints (which never wait) never
catch up: measured, 1.5 GB of WAL after 45 s with an empty queue (security review §2b).

So whenever the WAL holds more than its limit (looked at after every group commit) and at
least every ``interval`` seconds while it is not empty, a round runs in this module's own
thread:

1. a PASSIVE checkpoint copies most frames back while appends go on;
2. the outbox holds its writes (they queue; with a single owner that is a flag), the rest is
   copied, free pages are given back (below), and the WAL is started over; then the held
   appends commit as one group. The hold covers only what step 1 left over.

Under writes, step 2 is a RESTART checkpoint: the next commit writes the WAL from its start
again, over the file's existing blocks. Truncating the file instead (TRUNCATE) held the
writes ~21-30 ms every round (issue 15: ftruncate of a 16 MB WAL that commit-by-commit fsyncs
had left in many extents, on this machine's ext4), and those holds were the recording p99.
So under load the WAL file keeps its size (bounded by the throttle below), and it is
truncated to 0 bytes by the first round that finds the outbox idle (no write since the round
before). How much of the WAL is in use is read from the WAL-index header, not the file size.

The file itself is created in incremental auto-vacuum: after a backlog drains, a round gives
up to ``vacuum_pages`` free pages back to the file system, so the outbox does not keep its
peak size for ever (and in between, SQLite reuses free pages for new records).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path

log = logging.getLogger("gateway.outbox")

# Free pages are given back once they are at least this many and a quarter of the file.
_VACUUM_MIN_PAGES = 256
_BUSY_TIMEOUT_MS = 2000  # how long step 2 waits for a reader (a claim) or another process
# Page cache of the checkpoint connection, KiB (SQLite's default: 2,000). A checkpoint
# copies WAL frames into the file without the cache, and an incremental vacuum moves free
# pages once; nothing it reads is read again soon, so a cache would only hold memory
# (issue 15). The owner's connection keeps the default: its claims re-read fresh pages.
CACHE_KIB = 128
# The WAL-index header (the -shm file's first bytes, https://www.sqlite.org/walformat.html
# §4.1), in the host's byte order: szPage (u16, 1 meaning 65,536) at 14 and mxFrame (u32,
# the last valid frame) at 16. A WAL frame is a 24-byte header and one page; the file a
# 32-byte header.
_SZPAGE, _MXFRAME = slice(14, 16), slice(16, 20)
_FRAME_HEADER, _WAL_HEADER = 24, 32


class Checkpointer:
    """Runs checkpoint rounds on its own thread and connection; ``run`` is a supervised task."""

    def __init__(
        self,
        path: Path,
        *,
        limit_bytes: int = 16 * 1024 * 1024,
        interval: float = 30.0,
        vacuum_pages: int = 4096,
    ) -> None:
        self.path = Path(path)
        self.wal = Path(str(path) + "-wal")
        self.shm = Path(str(path) + "-shm")
        self.limit_bytes = limit_bytes
        self.interval = interval
        self.vacuum_pages = vacuum_pages
        self.wal_bytes = 0  # bytes of WAL in use after the last commit
        self.rounds = 0  # rounds that started the WAL over (or truncated it, when idle)
        self.busy = 0  # rounds a reader or another process kept from doing so
        self.hold_seconds = 0.0  # summed time writes were held
        self.max_hold = 0.0
        self.vacuumed_pages = 0
        self.writes = 0  # commits noted; a round with none since the last one truncates
        self._writes_at_round = -1
        self._wake = asyncio.Event()
        self._thread: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def note_write(self) -> int:
        """After a commit (on the loop): wake the round if the WAL holds more than its
        limit; the bytes of WAL in use."""
        self.writes += 1
        size = self.wal_in_use()
        self.wal_bytes = size
        if size >= self.limit_bytes:
            self._wake.set()
        return size

    def wal_in_use(self) -> int:
        """Bytes of the WAL that hold frames since it was last started over (0 without one):
        from the WAL-index header, as the file keeps its size when a RESTART reuses it. One
        read of 20 bytes; a torn read (a writer updating the header) is off by a commit."""
        try:
            with open(self.shm, "rb") as shm:
                head = shm.read(_MXFRAME.stop)
        except OSError:
            head = b""
        if len(head) < _MXFRAME.stop:
            # No WAL index to read (none yet, or SQLite kept it in memory): the file's size,
            # which is never less than what is in use, keeps the bound.
            return self._wal_size()
        frames = int.from_bytes(head[_MXFRAME], sys.byteorder)
        page = int.from_bytes(head[_SZPAGE], sys.byteorder)
        page = 65536 if page == 1 else page
        return _WAL_HEADER + frames * (_FRAME_HEADER + page) if frames else 0

    async def run(self, hold: Callable[[], AbstractAsyncContextManager[None]]) -> None:
        """Checkpoint on every wake-up and every ``interval`` (0: on wake-ups only);
        ``hold()`` holds the writes."""
        self._wake = asyncio.Event()  # this loop's (an outbox may be opened again)
        while True:
            # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a cancellation that
            # arrives as the wake-up does, and the task would outlive the outbox's close.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval if self.interval > 0 else None):
                    await self._wake.wait()
            self._wake.clear()
            # Frames to copy back, or an idle outbox whose WAL file can now be truncated.
            if self.wal_in_use() > 0 or (self._idle() and self._wal_size() > 0):
                await self.round(hold)

    def _idle(self) -> bool:
        """No commit since the last round."""
        return self.writes == self._writes_at_round

    async def round(self, hold: Callable[[], AbstractAsyncContextManager[None]]) -> None:
        """One PASSIVE checkpoint, then the rest with writes held, and the WAL started over
        (truncated to 0 bytes when no commit came since the last round)."""
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="outbox-checkpoint")
        truncate = self._idle()
        self._writes_at_round = self.writes
        vacuum = await loop.run_in_executor(self._thread, self._passive)
        async with hold():
            started = time.perf_counter()
            done = await loop.run_in_executor(self._thread, self._finish, vacuum, truncate)
            held = time.perf_counter() - started
        self.hold_seconds += held
        self.max_hold = max(self.max_hold, held)
        self.wal_bytes = self.wal_in_use()
        if done:
            self.rounds += 1
        else:
            self.busy += 1
            log.info("outbox checkpoint could not start the WAL over yet (a reader was busy)")

    def _wal_size(self) -> int:
        try:
            return os.stat(self.wal).st_size
        except OSError:
            return 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._conn = conn
        return self._conn

    def _passive(self) -> int:
        """Copy back what can be copied without waiting; the free pages the held step is to
        give back (counted here, so that with none to give the hold runs one statement: each
        statement the thread runs under the hold must win the GIL back from the loop)."""
        conn = self._connection()
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        if free >= _VACUUM_MIN_PAGES and free * 4 >= pages:
            return int(min(free, self.vacuum_pages))
        return 0

    def _finish(self, vacuum: int, truncate: bool) -> bool:
        """With the owner's writes held: give back ``vacuum`` free pages, then start the WAL
        over (and truncate its file when ``truncate``)."""
        conn = self._connection()
        if vacuum:
            # The pragma frees one page per step, and Python's sqlite3 steps a statement
            # without result columns only once: so one call per page, in one transaction.
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.execute("PRAGMA freelist_count").fetchone()[0]
                for _ in range(min(vacuum, before)):
                    conn.execute("PRAGMA incremental_vacuum(1)")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self.vacuumed_pages += min(vacuum, before)
        mode = "TRUNCATE" if truncate else "RESTART"
        busy, _, _ = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return bool(busy == 0)

    async def close(self) -> None:
        """Close the connection and the thread (after the last round)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        await asyncio.get_running_loop().run_in_executor(thread, self._close_conn)
        thread.shutdown(wait=True)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
