"""Checkpoints that recycle the outbox's WAL, on their own thread and connection.

Every few MB of appended records, a PASSIVE checkpoint copies the WAL back into the
database without ever blocking a commit or an fsync on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger("gateway.outbox")

CHECKPOINT_BYTES = 4 * 1024 * 1024


class Checkpointer:
    """Counts appended bytes and starts a checkpoint in its thread past ``CHECKPOINT_BYTES``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._since = 0
        self._running = False
        self._thread: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="outbox-checkpoint")

    def appended(self, nbytes: int) -> None:
        """Count a committed group's bytes (on the loop); checkpoint when enough piled up."""
        self._since += nbytes
        if self._since < CHECKPOINT_BYTES or self._running or self._thread is None:
            return
        self._since = 0
        self._running = True
        done = asyncio.get_running_loop().run_in_executor(self._thread, self._checkpoint)
        done.add_done_callback(lambda _: setattr(self, "_running", False))

    def _checkpoint(self) -> None:
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
                self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("outbox checkpoint failed: %s", exc)

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        await asyncio.get_running_loop().run_in_executor(thread, self._close_conn)
        thread.shutdown(wait=True)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
