"""The durable local outbox: SQLite in WAL mode, written by one thread with group commit.

Every operation is a command queued to the single writer thread. The thread takes whatever
has queued while it was busy, writes all the appends in one transaction, commits (an fsync
in ``power`` durability), then settles every waiting request at once: no fixed linger, so a
lone client pays one commit and a crowd shares it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.errors import Unavailable
from gateway.model import ConsentRecord

log = logging.getLogger("gateway.outbox")

FILE_NAME = "outbox.sqlite3"
IDEMPOTENCY_TTL_NS = 24 * 3600 * 1_000_000_000
_PRUNE_EVERY_S = 300.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL,
    queued_ns INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    site TEXT NOT NULL,
    key TEXT NOT NULL,
    record_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    receipt TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    PRIMARY KEY (site, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL,
    body BLOB NOT NULL,
    sink TEXT NOT NULL,
    reason TEXT NOT NULL,
    dead_ns INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class Appended:
    """The answer to an append: the stored record's identity and receipt."""

    record_id: str
    recorded_at: str
    receipt: str
    duplicate: bool  # True when an earlier record with the same idempotency key answered


@dataclass(frozen=True)
class OutboxItem:
    """A claimed, undelivered record; ``body`` is its JSON as appended."""

    seq: int
    record_id: str
    body: bytes

    def record(self) -> ConsentRecord:
        return ConsentRecord.from_json(orjson.loads(self.body))


@dataclass(frozen=True)
class DeadLetter:
    """A record a sink refused for good, kept with the reason until replayed."""

    record_id: str
    sink: str
    reason: str
    dead_ns: int


@dataclass(frozen=True)
class _Append:
    record_id: str
    site: str
    key: str | None
    recorded_at: str
    receipt: str
    body: bytes
    future: asyncio.Future[Appended]


_Command = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
_Settled = list[tuple["asyncio.Future[Any]", Any, BaseException | None]]


def quarantine(path: Path, reason: str) -> Path:
    """Move a damaged database (and its WAL) aside so nothing in it is lost or overwritten."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}-{time.time_ns() % 1_000_000}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(str(path) + suffix)
        if part.exists():
            part.rename(Path(str(target) + suffix))
    log.error(
        "outbox %s is unreadable (%s); moved it to %s and started a fresh outbox. "
        "Records in it were NOT forwarded: inspect it with sqlite3 and re-append them.",
        path, reason, target,
    )
    return target


class Outbox:
    """A bounded, durable queue of consent records owned by one writer thread."""

    def __init__(
        self,
        path: Path,
        *,
        durability: str = "power",
        max_records: int = 1_000_000,
        retry_after: int = 5,
    ) -> None:
        if durability not in ("power", "process"):
            raise ValueError(f"unknown durability {durability!r}")
        self.path = Path(path)
        self.durability = durability
        self.max_records = max_records
        self.retry_after = retry_after
        self.quarantined: Path | None = None
        self.writable = False
        self._queue: queue.SimpleQueue[_Command | _Append | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._depth = 0
        self._pending = 0
        self._oldest_ns: int | None = None
        self._cursor = 0
        self._closed = True
        self._next_prune = 0.0
        self.arrived = asyncio.Event()
        self.commits = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the database in its own thread; quarantine it if corrupt."""
        self._loop = asyncio.get_running_loop()
        self.arrived = asyncio.Event()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="outbox-writer", daemon=True
        )
        self._thread.start()
        await ready
        self._closed = False
        if self._depth:
            self.arrived.set()

    async def close(self) -> None:
        """Finish queued commands, then close the database."""
        if self._thread is None:
            return
        self._closed = True
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        self.writable = False

    # -- the writer thread ---------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise sqlite3.DatabaseError(f"journal mode is {mode}, not wal")
            sync = "FULL" if self.durability == "power" else "NORMAL"
            conn.execute(f"PRAGMA synchronous = {sync}")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_db(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._connect()
        except sqlite3.DatabaseError as exc:
            self.quarantined = quarantine(self.path, str(exc))
            conn = self._connect()
        self._depth = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        self._refresh_oldest(conn)
        return conn

    def _refresh_oldest(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT queued_ns FROM outbox ORDER BY seq LIMIT 1").fetchone()
        self._oldest_ns = row[0] if row else None
        if row is None:
            # Another process (the replay command) may have changed the table behind us.
            self._depth = 0

    def _run(self, ready: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            conn = self._open_db()
        except BaseException as exc:  # any failure must reach open(), not die in the thread
            loop.call_soon_threadsafe(_settle_one, ready, None, exc)
            return
        self.writable = True
        loop.call_soon_threadsafe(_settle_one, ready, None, None)
        try:
            self._serve(conn, loop)
        finally:
            conn.close()

    def _serve(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            appends = [i for i in items if isinstance(i, _Append)]
            settled: _Settled = []
            if appends:
                try:
                    settled.extend(self._commit_appends(conn, appends))
                except BaseException as exc:  # never leave a request waiting forever
                    _rollback(conn)
                    settled.extend((a.future, None, exc) for a in appends)
            for item in items:
                if item is None:
                    stopping = True
                elif isinstance(item, tuple):
                    fn, future = item
                    try:
                        settled.append((future, fn(conn), None))
                    except BaseException as exc:  # the caller decides; the thread lives on
                        _rollback(conn)
                        settled.append((future, None, exc))
            if time.monotonic() >= self._next_prune:
                self._prune(conn)
            loop.call_soon_threadsafe(self._settle, settled, len(appends))

    def _commit_appends(self, conn: sqlite3.Connection, appends: list[_Append]) -> _Settled:
        now = time.time_ns()
        answers: list[tuple[_Append, Appended]] = []
        inserted = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            for a in appends:
                if a.key is not None:
                    row = conn.execute(
                        "SELECT record_id, recorded_at, receipt FROM idempotency "
                        "WHERE site = ? AND key = ?",
                        (a.site, a.key),
                    ).fetchone()
                    if row is not None:
                        answers.append((a, Appended(row[0], row[1], row[2], True)))
                        continue
                    conn.execute(
                        "INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
                        (a.site, a.key, a.record_id, a.recorded_at, a.receipt, now),
                    )
                conn.execute(
                    "INSERT INTO outbox (record_id, queued_ns, body) VALUES (?, ?, ?)",
                    (a.record_id, now, a.body),
                )
                inserted += 1
                answers.append((a, Appended(a.record_id, a.recorded_at, a.receipt, False)))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            self.writable = False
            log.error("outbox commit failed: %s", exc)
            error = Unavailable(f"the outbox cannot write: {exc}", retry_after=self.retry_after)
            return [(a.future, None, error) for a in appends]
        self.writable = True
        self.commits += 1
        if inserted and self._oldest_ns is None:
            self._oldest_ns = now
        self._depth += inserted
        return [(a.future, answer, None) for a, answer in answers]

    def _prune(self, conn: sqlite3.Connection) -> None:
        self._next_prune = time.monotonic() + _PRUNE_EVERY_S
        try:
            conn.execute(
                "DELETE FROM idempotency WHERE created_ns < ?",
                (time.time_ns() - IDEMPOTENCY_TTL_NS,),
            )
        except sqlite3.Error as exc:
            log.warning("pruning idempotency keys failed: %s", exc)

    def _settle(self, settled: _Settled, appended: int) -> None:
        self._pending -= appended
        for future, result, exc in settled:
            _settle_one(future, result, exc)
        if appended:
            self.arrived.set()

    # -- the event-loop side -------------------------------------------------------------

    def _submit(self, fn: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        if self._closed or self._loop is None:
            raise Unavailable("the outbox is closed", retry_after=self.retry_after)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((fn, future))
        return future

    async def append(
        self, record: ConsentRecord, receipt: str, body: bytes | None = None
    ) -> Appended:
        """Store a record (``body``: its JSON, if already encoded); resolves after the commit."""
        if self._closed or self._loop is None:
            raise Unavailable("the outbox is closed", retry_after=self.retry_after)
        if self._depth + self._pending >= self.max_records:
            raise Unavailable(
                f"the outbox holds {self._depth} undelivered records (limit "
                f"{self.max_records}); the central store is not keeping up",
                retry_after=self.retry_after,
            )
        item = _Append(
            record_id=record.record_id,
            site=record.site,
            key=record.idempotency_key,
            recorded_at=record.recorded_at,
            receipt=receipt,
            body=orjson.dumps(record.as_json()) if body is None else body,
            future=self._loop.create_future(),
        )
        self._pending += 1
        self._queue.put(item)
        # Shield: a cancelled request must not cancel the shared future the writer settles.
        return await asyncio.shield(item.future)

    async def claim(self, limit: int) -> list[OutboxItem]:
        """The next ``limit`` undelivered records after the ones already claimed."""

        def run(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(
                "SELECT seq, record_id, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (self._cursor, limit),
            ).fetchall()
            if rows:
                self._cursor = rows[-1][0]
            return [OutboxItem(r[0], r[1], bytes(r[2])) for r in rows]

        result: list[OutboxItem] = await self._submit(run)
        return result

    def rewind(self) -> None:
        """Claim again from the oldest undelivered record (after a forwarder restart)."""
        self._cursor = 0

    async def ack(self, seqs: Iterable[int]) -> None:
        """Forget delivered records."""
        params = [(s,) for s in seqs]
        if not params:
            return

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            before = conn.total_changes
            conn.executemany("DELETE FROM outbox WHERE seq = ?", params)
            removed = conn.total_changes - before
            conn.execute("COMMIT")
            self._depth -= removed
            self._refresh_oldest(conn)

        await self._submit(run)

    async def dead_letter(self, items: Sequence[tuple[OutboxItem, str, str]]) -> None:
        """Move records a sink refused for good, as ``(item, sink, reason)``, aside."""
        if not items:
            return
        now = time.time_ns()
        rows = [(i.record_id, i.body, sink, reason[:2000], now) for i, sink, reason in items]
        seqs = [(i.seq,) for i, _, _ in items]

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO dead_letter (record_id, body, sink, reason, dead_ns) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            before = conn.total_changes
            conn.executemany("DELETE FROM outbox WHERE seq = ?", seqs)
            removed = conn.total_changes - before
            conn.execute("COMMIT")
            self._depth -= removed
            self._refresh_oldest(conn)

        await self._submit(run)

    async def replay(self) -> int:
        """Queue every dead letter again for delivery; returns how many."""

        def run(conn: sqlite3.Connection) -> int:
            now = time.time_ns()
            conn.execute("BEGIN IMMEDIATE")
            moved = conn.execute(
                "INSERT INTO outbox (record_id, queued_ns, body) "
                "SELECT record_id, ?, body FROM dead_letter ORDER BY id",
                (now,),
            ).rowcount
            conn.execute("DELETE FROM dead_letter")
            conn.execute("COMMIT")
            self._depth += moved
            self._refresh_oldest(conn)
            return int(moved)

        moved: int = await self._submit(run)
        if moved:
            self.arrived.set()
        return moved

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters, with their reasons."""

        def run(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                "SELECT record_id, sink, reason, dead_ns FROM dead_letter ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
            return [DeadLetter(*r) for r in rows]

        result: list[DeadLetter] = await self._submit(run)
        return result

    async def dead_letter_count(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT count(*) FROM dead_letter").fetchone()[0])

        count: int = await self._submit(run)
        return count

    @property
    def depth(self) -> int:
        """Undelivered records committed to the outbox."""
        return self._depth

    def oldest_age(self) -> float | None:
        """Seconds the oldest undelivered record has waited, or None when empty."""
        oldest = self._oldest_ns
        return None if oldest is None else max(0.0, (time.time_ns() - oldest) / 1e9)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.error("outbox rollback failed: %s", exc)


def _settle_one(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
