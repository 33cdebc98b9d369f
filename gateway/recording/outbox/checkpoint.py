"""Keeping the outbox's WAL bounded under any load, and its file small after delivery.

Each commit in WAL mode appends pages to the WAL, and SQLite starts the WAL over only once a
checkpoint has copied every frame back into the database with no write in between. The
outbox writes without pause under load, so PASSIVE checkpoints (which never wait) never
catch up: measured, 1.5 GB of WAL after 45 s with an empty queue (security review §2b).

So whenever the WAL passes its limit (looked at after every group commit) and at least every
``interval`` seconds while it is not empty, a round runs in this module's own thread:

1. a PASSIVE checkpoint copies most frames back while appends go on;
2. the outbox holds its writes (they queue; with a single owner that is a flag), the rest is
   copied, free pages are given back (below), and the WAL is truncated to 0 bytes; then the
   held appends commit as one group. The hold covers only what step 1 left over.

Should the WAL pass twice its limit during step 1 (appends outrunning the copy on a slow disk
or a busy machine), the outbox lets new groups wait for the truncation (at most half a
second each time), so the WAL stays bounded under any load.

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
        self.limit_bytes = limit_bytes
        self.interval = interval
        self.vacuum_pages = vacuum_pages
        self.wal_bytes = 0  # the WAL's size after the last commit
        self.rounds = 0  # rounds that truncated the WAL
        self.busy = 0  # rounds a reader or another process kept from truncating
        self.hold_seconds = 0.0  # summed time writes were held
        self.max_hold = 0.0
        self.vacuumed_pages = 0
        self._wake = asyncio.Event()
        self._thread: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def note_write(self) -> int:
        """After a commit (on the loop): wake the round if the WAL is past its limit; the
        WAL's size."""
        try:
            size = os.stat(self.wal).st_size
        except OSError:
            return 0
        self.wal_bytes = size
        if size >= self.limit_bytes:
            self._wake.set()
        return size

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
            if self._wal_size() > 0:
                await self.round(hold)

    async def round(self, hold: Callable[[], AbstractAsyncContextManager[None]]) -> None:
        """One PASSIVE checkpoint, then the rest with writes held, and the WAL truncated."""
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="outbox-checkpoint")
        await loop.run_in_executor(self._thread, self._passive)
        async with hold():
            started = time.perf_counter()
            truncated = await loop.run_in_executor(self._thread, self._truncate)
            held = time.perf_counter() - started
        self.hold_seconds += held
        self.max_hold = max(self.max_hold, held)
        self.wal_bytes = self._wal_size()
        if truncated:
            self.rounds += 1
        else:
            self.busy += 1
            log.info("outbox checkpoint could not truncate the WAL yet (a reader was busy)")

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

    def _passive(self) -> None:
        self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _truncate(self) -> bool:
        """With the owner's writes held: give back free pages, then empty the WAL."""
        conn = self._connection()
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        if free >= _VACUUM_MIN_PAGES and free * 4 >= pages:
            count = min(free, self.vacuum_pages)
            # The pragma frees one page per step, and Python's sqlite3 steps a statement
            # without result columns only once: so one call per page, in one transaction.
            conn.execute("BEGIN IMMEDIATE")
            try:
                for _ in range(count):
                    conn.execute("PRAGMA incremental_vacuum(1)")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self.vacuumed_pages += count
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
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
