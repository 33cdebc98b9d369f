"""What every store in the embedded SQLite file shares: the connection and its pragmas, one
call at a time in a worker thread, and explicit transactions."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def connect(path: Path, *, secure_delete: bool = False) -> sqlite3.Connection:
    """A connection to the store file (created with its folder): WAL, fsync on commit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    if secure_delete:
        # Erased values are overwritten with zeros in the database file, not left in free pages.
        conn.execute("PRAGMA secure_delete = ON")
    return conn


def create_tables(conn: sqlite3.Connection, schema: str) -> None:
    """Run ``schema`` (CREATE … IF NOT EXISTS statements) in one transaction."""
    conn.executescript(f"BEGIN IMMEDIATE; {schema} COMMIT;")


def transaction_of(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """``fn`` run in one write transaction: committed if it returns, rolled back if it raises."""

    def run(conn: sqlite3.Connection) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return result

    return run


class SqliteOwned:
    """A connection of its own; each call runs in a worker thread, one at a time."""

    what = "the store"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        raise NotImplementedError

    async def open(self) -> None:
        self._conn = await asyncio.to_thread(self._connect)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            async with self._lock:
                await asyncio.to_thread(conn.close)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in a worker thread, after the calls before it."""
        if self._conn is None:
            raise RuntimeError(f"{self.what} is not open")
        async with self._lock:
            return await asyncio.to_thread(fn, self._conn, *args)
