"""The durable local outbox: SQLite in WAL mode, one owner, group commit without linger.

All SQL runs on the event loop's thread (one owner, no locks): appends that arrive in the
same loop iteration are committed together in a few statements, which only write to the WAL.
In ``power`` durability a helper process (fsyncer.py) then fsyncs the WAL, and the requests
are answered only after it says so; appends arriving meanwhile form the next group.
Measured: running SQLite itself in a worker thread cost milliseconds per group in GIL
hand-offs, while the commit without fsync takes tens of microseconds on the loop.

The rest of the package serves this state machine: database.py opens the file,
idempotency.py and dead_letters.py hold their tables' SQL, checkpoint.py keeps the WAL
bounded (it briefly holds the writes here), fsyncer.py runs the fsync helper.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway.core import row_chunks
from gateway.core.errors import Unavailable
from gateway.core.record_codec import Record, encode_record
from gateway.core.tasks import Supervisor
from gateway.recording.outbox import database, idempotency
from gateway.recording.outbox.checkpoint import Checkpointer
from gateway.recording.outbox.delivery import DeliverySide
from gateway.recording.outbox.fsyncer import Fsyncer
from gateway.recording.outbox.items import (
    Append,
    Appended,
    OutboxItem,
    Settled,
    answers,
    keys_of,
    settle_one,
)

log = logging.getLogger("gateway.outbox")

# Records go in as one multi-row VALUES statement (one sqlite3 call, so one GIL hand-off, and
# no JSON parsing in SQLite): measured, a group of 64 commits in ~0.9-1.4 ms of loop time
# instead of ~1.5-2.1 ms with json_each over the bodies.
# row_chunks pads a group to one of a few statement sizes, so the connection's statement cache
# keeps them all (and stays small).
_MAX_ROWS = 500  # 3 parameters a row, far below SQLite's 32,766
_FSYNC_CHECK_S = 5.0  # how often a dead fsync helper is looked for and started again
# Past twice its limit the WAL is growing faster than a round's unheld (PASSIVE) step copies
# it back (a slow disk, a busy machine): new groups then wait for the round to truncate it,
# for at most this long, so the WAL stays bounded whatever the load.
_THROTTLE_S = 0.5


_INSERT = "INSERT INTO outbox (record_id, queued_ns, body)"


# Committed records kept in memory for the forwarder (oldest first), so it claims them
# without reading them back and decoding them: measured ~3 µs of loop time per record.
# Bounded: past this many (a forwarder that is behind, stopped or failing), the copies are
# dropped and the forwarder reads the rows from the database as it always can. A copy is
# ~2.4 KB (the JSON and its object); issue 15 measured 5,000 (~12 MB at a stall of the
# store) leaving a worker several MB bigger for good (Python's arenas stay partly used).
# A forwarder that keeps up needs far fewer: it claims every ~50 ms under load, ~200
# records at 4,000 consents/s; 2,000 is two of its batches (~5 MB at most).
FRESH_MAX = 2_000
# Group fsyncs asked of the helper at once. One: while it runs, the appends that arrive wait
# uncommitted and form the next group, committed the moment it ends, so a slow fsync grows
# the next group instead of queueing more small commits (each a commit, a pipe write and an
# answer read on the loop) behind it. On this machine's ~0.35 ms fsyncs the loop's own
# iteration time sets the cycle: measured with 1 worker at 64 connections, ~29 records a
# group with one in flight and ~28 with two, within noise in CPU per request.
SYNCS_IN_FLIGHT = 1


class Outbox(DeliverySide):
    """A bounded, durable queue of consent records; every SQL write runs on the loop thread.

    ``open`` starts its maintenance tasks (checkpointer, key pruner, fsync helper watch)
    under ``tasks``, the caller's supervisor, or one of its own.
    """

    def __init__(
        self,
        path: Path,
        *,
        durability: str = "power",
        max_records: int = 1_000_000,
        retry_after: int = 5,
        checkpoint_bytes: int = 16 * 1024 * 1024,
        checkpoint_interval: float = 30.0,
        tasks: Supervisor | None = None,
    ) -> None:
        if durability not in ("power", "process"):
            raise ValueError(f"unknown durability {durability!r}")
        self.path = Path(path)
        self.durability = durability
        self.max_records = max_records
        self.retry_after = retry_after
        self.quarantined: Path | None = None
        self.writable = False
        self.arrived = asyncio.Event()
        self.commits = 0
        self.appended = 0  # records committed since this process opened it
        self.syncs = 0
        self.sync_seconds = 0.0  # summed wait for the fsync helper (power durability)
        self.checkpointer = Checkpointer(
            self.path, limit_bytes=checkpoint_bytes, interval=checkpoint_interval
        )
        self.tasks = tasks if tasks is not None else Supervisor()
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._syncer: ThreadPoolExecutor | None = None
        self._fsyncer: Fsyncer | None = None  # power durability: fsyncs the WAL
        self._waiting: list[Append] = []
        self._unsynced: Settled = []
        self._unsynced_items: list[OutboxItem] = []
        # One entry per group whose fsync is asked for and not answered: its first seq and
        # when it was asked (the fsync helper answers in order).
        self._syncing: collections.deque[tuple[int | None, float]] = collections.deque()
        self._fresh: collections.deque[OutboxItem] = collections.deque()
        self._flush_scheduled = False
        self._held = False  # the checkpointer holds every write for a moment
        self._throttled: asyncio.TimerHandle | None = None  # groups wait for a truncation
        self._resumed = asyncio.Event()
        self._idle: asyncio.Future[None] | None = None
        self._depth = 0
        self._pending = 0
        self._oldest_ns: int | None = None
        self._cursor = 0
        self._maintenance: tuple[str, ...] = ()

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the database, quarantining it if corrupt; start maintenance."""
        self._loop = asyncio.get_running_loop()
        self.arrived = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._held = False
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="outbox-io")
        self._conn = await self._loop.run_in_executor(self._syncer, self._open_db)
        if self.durability == "power":
            self._fsyncer = Fsyncer(Path(str(self.path) + "-wal"))
            try:
                await self._loop.run_in_executor(self._syncer, self._fsyncer.start)
            except OSError as exc:  # request() starts it again, or fails the appends
                log.error("cannot start the outbox fsync helper: %s", exc)
            self._fsyncer.attach(self._loop)
        self.writable = True
        if self._depth:
            self.arrived.set()
        self._start_maintenance()

    def _start_maintenance(self) -> None:
        names = ["outbox-checkpointer", "outbox-pruner"]
        self.tasks.start(names[0], functools.partial(self.checkpointer.run, self.held))
        self.tasks.start(names[1], self._prune_forever)
        if self._fsyncer is not None:
            names.append("outbox-fsync-helper")
            self.tasks.start(names[2], self._watch_fsyncer)
        self._maintenance = tuple(names)

    async def close(self) -> None:
        """Stop maintenance, wait for the last fsync, then close the database."""
        if self._conn is None:
            return
        await self.tasks.stop(*self._maintenance)
        self._maintenance = ()
        if self._throttled is not None:  # no round is coming to lift it: commit what waits
            self._throttled.cancel()
            self._throttled = None
        if self._waiting:
            self._flush()
        while self._syncing or self._unsynced:
            assert self._loop is not None
            self._idle = self._loop.create_future()
            await self._idle
        conn, self._conn = self._conn, None
        self.writable = False
        assert self._syncer is not None
        assert self._loop is not None
        if self._fsyncer is not None:
            fsyncer, self._fsyncer = self._fsyncer, None
            fsyncer.stop_reading()  # here, on the loop: the wait for the exit is not
            await self._loop.run_in_executor(self._syncer, fsyncer.close)
        await self._loop.run_in_executor(self._syncer, conn.close)
        self._syncer.shutdown(wait=True)
        self._syncer = None
        await self.checkpointer.close()

    # -- opening -------------------------------------------------------------------------

    def _open_db(self) -> sqlite3.Connection:
        conn, quarantined = database.open_db(self.path)
        if quarantined is not None:
            self.quarantined = quarantined
        self._depth = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        self._refresh_oldest(conn)
        return conn

    def _refresh_oldest(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT queued_ns FROM outbox ORDER BY seq LIMIT 1").fetchone()
        self._oldest_ns = row[0] if row else None
        if row is None:
            # Another process (the replay command) may have changed the table behind us.
            self._depth = 0

    # -- maintenance tasks -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold every write (appends queue, maintenance writes wait) for a moment."""
        while self._held:  # one holder at a time
            await self._resumed.wait()
        self._held = True
        self._resumed.clear()
        try:
            yield
        finally:
            self._held = False
            self._resumed.set()
            self._unthrottle()

    def _throttle(self) -> None:
        if self._throttled is None and self._loop is not None:
            self._throttled = self._loop.call_later(_THROTTLE_S, self._unthrottle)

    def _unthrottle(self) -> None:
        """Let groups commit again (a round ended, or the throttle's time ran out)."""
        if self._throttled is not None:
            self._throttled.cancel()
            self._throttled = None
        if self._waiting and not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    async def _prune_forever(self) -> None:
        while True:
            await self.prune()
            await asyncio.sleep(idempotency.PRUNE_EVERY_S)

    async def prune(self) -> int:
        """Forget idempotency keys older than a day, a few hundred at a time with group
        commits in between; how many."""
        now = time.time_ns()
        end: int = await self._write(lambda conn: idempotency.expired_end(conn, now))
        pruned, chunk = 0, idempotency.PRUNE_CHUNK
        while True:
            done: int = await self._write(lambda conn: idempotency.prune(conn, end, chunk))
            pruned += done
            if done < chunk:
                return pruned
            await asyncio.sleep(0)  # the appends that arrived meanwhile commit first

    async def _watch_fsyncer(self) -> None:
        """Start the fsync helper again when it is gone (raises while it cannot start)."""
        while True:
            fsyncer = self._fsyncer
            if fsyncer is not None:
                fsyncer.ensure()
            await asyncio.sleep(_FSYNC_CHECK_S)

    # -- group commit ----------------------------------------------------------------------

    def _flush(self) -> None:
        """Commit everything that arrived since the last group (runs on the loop)."""
        self._flush_scheduled = False
        if self._held or self._throttled is not None:
            return  # the appends wait in _waiting; the end of the hold flushes them
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        conn = self._conn
        if conn is None:
            error = Unavailable("the outbox is closed", retry_after=self.retry_after)
            self._settle([(a.future, None, error) for a in batch], len(batch))
            return
        items: list[OutboxItem] = []
        try:
            settled, committed = self._commit_appends(conn, batch, items)
        except Exception as exc:  # never leave a request waiting on a commit that failed
            database.rollback(conn)
            log.exception("outbox group commit failed")
            error = Unavailable(f"the outbox cannot write: {exc}", retry_after=self.retry_after)
            settled, committed = [(a.future, None, error) for a in batch], False
            items = []
        if self.checkpointer.note_write() >= 2 * self.checkpointer.limit_bytes:
            self._throttle()
        # A committed group waits for its fsync even with nothing new in it: a retry answered
        # from an earlier record must not be answered before that record's own fsync.
        if self.durability == "process" or not committed:
            self._hand_over(items)
            self._settle(settled, len(batch))
            return
        self._unsynced.extend(settled)
        self._unsynced_items.extend(items)
        self._start_sync()

    def _start_sync(self) -> None:
        if len(self._syncing) >= SYNCS_IN_FLIGHT or not self._unsynced:
            return
        assert self._fsyncer is not None
        group, self._unsynced = self._unsynced, []
        items, self._unsynced_items = self._unsynced_items, []
        self._syncing.append((items[0].seq if items else None, time.perf_counter()))
        self._fsyncer.request(lambda exc: self._synced(group, items, exc))

    def _synced(self, group: Settled, items: list[OutboxItem], exc: OSError | None) -> None:
        _, asked = self._syncing.popleft()
        self.syncs += 1
        self.sync_seconds += time.perf_counter() - asked
        if exc is not None:
            log.error("outbox fsync failed: %s", exc)
            self.writable = False
            error = Unavailable(f"the outbox cannot sync: {exc}", retry_after=self.retry_after)
            group = [(f, None, error) for f, _, _ in group]
        else:
            # Only durable records go to the forwarder; unsynced ones it reads from the
            # database if they survived.
            self._hand_over(items)
        self._settle(group, len(group))
        # Whatever queued during the fsync is the next group: commit it now.
        if self._waiting and not self._held and self._throttled is None:
            self._flush()
        else:
            self._start_sync()
        if not self._syncing and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _hand_over(self, items: list[OutboxItem]) -> None:
        if len(self._fresh) + len(items) > FRESH_MAX:
            self._fresh.clear()  # the forwarder is behind: it reads from the database
            return
        self._fresh.extend(items)

    def _commit_appends(
        self, conn: sqlite3.Connection, appends: list[Append], items: list[OutboxItem]
    ) -> tuple[Settled, bool]:
        """Commit a group; ``items`` receives the stored records, in seq order. The flag
        says whether the group committed (else every answer is the failure)."""
        # Each sqlite3 call re-acquires the GIL, which a busy event loop holds for up to the
        # switch interval (5 ms); so a whole group is written with a handful of statements
        # over JSON arrays instead of one statement per record.
        now = time.time_ns()
        keyed = any(a.scope is not None for a in appends)
        try:
            conn.execute("BEGIN IMMEDIATE")
            verdicts, fresh_appends = keys_of(conn, appends, now) if keyed else ([], appends)
            stored: list[OutboxItem] = []
            for chunk in row_chunks.slices(fresh_appends, _MAX_ROWS):
                bodies = [a.body.decode() for a in chunk]
                rows = [(a.record_id, now, body) for a, body in zip(chunk, bodies, strict=True)]
                last = conn.execute(*row_chunks.statement(_INSERT, 3, rows, _MAX_ROWS)).lastrowid
                # One multi-row INSERT inside our write transaction: consecutive seqs.
                seq0 = (last or 0) - len(chunk) + 1
                stored += [
                    OutboxItem(seq0 + i, a.record_id, body, a.record.plain_json())
                    for i, (a, body) in enumerate(zip(chunk, bodies, strict=True))
                ]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            database.rollback(conn)
            self.writable = False
            log.error("outbox commit failed: %s", exc)
            error = Unavailable(f"the outbox cannot write: {exc}", retry_after=self.retry_after)
            return [(a.future, None, error) for a in appends], False
        self.writable = True
        self.commits += 1
        items += stored
        if fresh_appends and self._oldest_ns is None:
            self._oldest_ns = now
        self._depth += len(fresh_appends)
        self.appended += len(fresh_appends)
        if not keyed:
            return [(a.future, Appended(a.record_id, a.recorded_at, a.receipt, False), None)
                    for a in appends], True  # fmt: skip
        return answers(appends, verdicts), True

    def _settle(self, settled: Settled, appended: int) -> None:
        self._pending -= appended
        for future, result, exc in settled:
            settle_one(future, result, exc)
        if appended:
            self.arrived.set()

    # -- the API -------------------------------------------------------------------------

    def _submit(self, fn: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        """Run a command now, between group commits (same thread, no overlap)."""
        if self._conn is None or self._loop is None:
            raise Unavailable("the outbox is closed", retry_after=self.retry_after)
        future: asyncio.Future[Any] = self._loop.create_future()
        try:
            future.set_result(fn(self._conn))
        except sqlite3.Error as exc:
            database.rollback(self._conn)
            future.set_exception(exc)
        return future

    async def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run a writing command once no hold is on (the checkpointer may hold writes)."""
        while self._held:
            await self._resumed.wait()
        result = await self._submit(fn)
        self.checkpointer.note_write()
        return result

    async def append(
        self,
        record: Record,
        receipt: str,
        body: bytes | None = None,
        scope: idempotency.Scope | None = None,
    ) -> Appended:
        """Store a record (``body``: its JSON, if already encoded; ``scope``: its idempotency
        key's digest, fingerprint and content hash, if made already); resolves after the commit.

        Raises ``Unavailable`` when the outbox is full or cannot write, and ``BadRequest``
        (409 ``idempotency_key_reused``) when this subject used the record's idempotency key
        for a different choice."""
        if self._conn is None or self._loop is None:
            raise Unavailable("the outbox is closed", retry_after=self.retry_after)
        if self._depth + self._pending >= self.max_records:
            raise Unavailable(
                f"the outbox holds {self._depth} undelivered records (limit "
                f"{self.max_records}); the central store is not keeping up",
                retry_after=self.retry_after,
            )
        future: asyncio.Future[Appended] = self._loop.create_future()
        encoded = encode_record(record) if body is None else body
        self._pending += 1
        self._waiting.append(Append(record, receipt, encoded, future, scope))
        if not self._flush_scheduled and len(self._syncing) < SYNCS_IN_FLIGHT:
            # After the callbacks already queued run: whatever arrives meanwhile joins the
            # group, with no fixed linger. While the fsyncs in flight are at the limit, the
            # group grows until the oldest ends.
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        # A cancelled request cancels only its own future; the record is still committed
        # and settling skips futures that are already done.
        return await future
