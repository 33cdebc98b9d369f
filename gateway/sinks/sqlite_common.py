"""What every store in the embedded SQLite file shares: the connection and its pragmas, one
call at a time in a thread of its own, and explicit transactions."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Page cache of each connection to the store file, in KiB (SQLite's default is 2,000 KiB per
# connection, and a worker holds three: the store's, the directory's, the rights'). Issue 15
# (a worker's memory): the store's writes go into an index far bigger than any cache, and
# the pages SQLite does not keep come from the OS's file cache; measured over 200k records,
# 512 KiB wrote as fast as 2,000 KiB (~4,000 records/s, both within noise) and a subject's
# history read in ~20 µs either way.
CACHE_KIB = 512


def connect(path: Path, *, secure_delete: bool = False) -> sqlite3.Connection:
    """A connection to the store file (created with its folder): WAL, fsync on commit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
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
    """A connection of its own; each call runs in the connection's own thread, one at a time.

    One thread per connection, not the loop's shared executor: glibc gives each thread that
    allocates its own malloc arena, and with any executor thread running any store's calls
    each arena grew to hold every connection's page cache and batch buffers (issue 15:
    ~9 MB of arenas at 300k consents). Calls were one at a time already (the lock)."""

    what = "the store"
    thread_name = "sqlite-store"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._thread: ThreadPoolExecutor | None = None

    def _connect(self) -> sqlite3.Connection:
        raise NotImplementedError

    async def open(self) -> None:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=self.thread_name)
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._thread, self._connect)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            async with self._lock:
                await asyncio.get_running_loop().run_in_executor(self._thread, conn.close)
        if self._thread is not None:
            thread, self._thread = self._thread, None
            thread.shutdown(wait=False)  # idle: the close above was its last call

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in the connection's thread, after the calls before it."""
        if self._conn is None:
            raise RuntimeError(f"{self.what} is not open")
        async with self._lock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, fn, self._conn, *args)


def stored_since(
    conn: sqlite3.Connection, table: str, after_seq: int, chunk: int = 10_000
) -> Iterator[list[tuple[int, str]]]:
    """The ``(seq, body)`` rows of an append-only record table past ``after_seq``, in store
    order, ``chunk`` at a time (what linking an existing store holds in memory at once).
    ``table`` is one of the stores' own table names, never input."""
    while True:
        rows: list[tuple[int, str]] = conn.execute(
            f"SELECT seq, body FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, chunk),
        ).fetchall()
        if not rows:
            return
        yield rows
        after_seq = rows[-1][0]
