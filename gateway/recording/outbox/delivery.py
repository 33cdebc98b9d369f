"""The forwarder's side of the outbox: claim the next records, acknowledge, set aside.

``DeliverySide`` is the half of ``Outbox`` (group_commit.py) that the forwarder and the
dead-letter commands call; the state it reads is the write side's, on the same loop thread.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from gateway.recording.outbox import dead_letters
from gateway.recording.outbox.dead_letters import DeadLetter
from gateway.recording.outbox.items import OutboxItem, Settled, ranges

_NO_SEQ = 2**63 - 1  # above every seq


class DeliverySide:
    """Claim, ack, dead-letter and replay; counts of what waits."""

    arrived: asyncio.Event
    _fresh: collections.deque[OutboxItem]
    _cursor: int
    _syncing: collections.deque[tuple[int | None, float]]
    _unsynced_items: list[OutboxItem]
    _unsynced: Settled
    _depth: int
    _oldest_ns: int | None
    path: Path

    def _submit(self, fn: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
        raise NotImplementedError

    async def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        raise NotImplementedError

    def _refresh_oldest(self, conn: sqlite3.Connection) -> None:
        raise NotImplementedError

    async def claim(self, limit: int) -> list[OutboxItem]:
        """The next ``limit`` undelivered records after the ones already claimed."""

        fresh = self._fresh
        while fresh and fresh[0].seq <= self._cursor:
            fresh.popleft()  # already claimed from the database
        if fresh and fresh[0].seq == self._cursor + 1:
            # Every earlier record is claimed: take the next ones from memory while their
            # seqs run on without a gap (a gap is a row appended by someone else: replay).
            claimed: list[OutboxItem] = []
            expected = fresh[0].seq
            while fresh and len(claimed) < limit and fresh[0].seq == expected:
                claimed.append(fresh.popleft())
                expected += 1
            self._cursor = expected - 1
            return claimed

        # Never a row still waiting for its fsync: the forwarder delivers durable records only.
        firsts = [seq for seq, _ in self._syncing if seq is not None]
        if self._unsynced_items:
            firsts.append(self._unsynced_items[0].seq)
        upper = min(firsts, default=_NO_SEQ)

        def run(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(
                "SELECT seq, record_id, body FROM outbox WHERE seq > ? AND seq < ? "
                "ORDER BY seq LIMIT ?",
                (self._cursor, upper, limit),
            ).fetchall()
            if rows:
                self._cursor = rows[-1][0]
            return [OutboxItem(*r) for r in rows]

        result: list[OutboxItem] = await self._submit(run)
        return result

    def rewind(self) -> None:
        """Claim again from the oldest undelivered record (after a forwarder restart)."""
        self._cursor = 0
        self._fresh.clear()

    async def ack(self, seqs: Iterable[int]) -> None:
        """Forget delivered records (idempotent: acking again is harmless)."""
        params = ranges(seqs)
        if not params:
            return

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            self._delete(conn, "DELETE FROM outbox WHERE seq BETWEEN ? AND ?", params)

        await self._write(run)

    def _delete(self, conn: sqlite3.Connection, sql: str, params: Sequence[tuple[int, ...]]
                ) -> None:  # fmt: skip
        """Delete delivered or dead rows, commit, and keep depth and oldest age current."""
        before = conn.total_changes
        conn.executemany(sql, params)
        removed = conn.total_changes - before
        conn.execute("COMMIT")
        self._depth -= removed
        self._refresh_oldest(conn)

    async def dead_letter(self, items: Sequence[tuple[OutboxItem, str, str]]) -> None:
        """Move records a sink refused for good, as ``(item, sink, reason)``, aside."""
        if not items:
            return
        rows = [(i.record_id, i.body, sink, reason) for i, sink, reason in items]
        seqs = [(i.seq,) for i, _, _ in items]

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            dead_letters.add(conn, rows, time.time_ns())
            self._delete(conn, "DELETE FROM outbox WHERE seq = ?", seqs)

        await self._write(run)

    async def replay(self) -> int:
        """Queue every dead letter again for delivery; returns how many."""

        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            moved = dead_letters.requeue(conn, time.time_ns())
            conn.execute("COMMIT")
            self._depth += moved
            self._refresh_oldest(conn)
            return moved

        moved: int = await self._write(run)
        if moved:
            self.arrived.set()
        return moved

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters, with their reasons."""
        result: list[DeadLetter] = await self._submit(lambda conn: dead_letters.oldest(conn, limit))
        return result

    async def dead_letter_count(self) -> int:
        count: int = await self._submit(dead_letters.count)
        return count

    @property
    def depth(self) -> int:
        """Undelivered records committed to the outbox."""
        return self._depth

    def oldest_age(self) -> float | None:
        """Seconds the oldest undelivered record has waited, or None when empty."""
        oldest = self._oldest_ns
        return None if oldest is None else max(0.0, (time.time_ns() - oldest) / 1e9)

    def file_bytes(self) -> int:
        """The outbox file's size on disk (without its WAL)."""
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0
