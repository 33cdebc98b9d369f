"""Dead letters: records a sink refused for good, kept with the reason until replayed.

The SQL runs on the outbox owner's connection (the outbox removes the rows it moves here
from its queue in the same transaction); ``consent-gateway outbox status|replay``
(commands.py) show and re-queue them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL,
    body BLOB NOT NULL,
    sink TEXT NOT NULL,
    reason TEXT NOT NULL,
    dead_ns INTEGER NOT NULL
);
"""
MAX_REASON = 2000


@dataclass(frozen=True)
class DeadLetter:
    """A record a sink refused for good, kept with the reason until replayed."""

    record_id: str
    sink: str
    reason: str
    dead_ns: int


def add(
    conn: sqlite3.Connection, rows: Sequence[tuple[str, str | bytes, str, str]], now_ns: int
) -> None:
    """Keep ``(record_id, body, sink, reason)`` rows (inside the caller's transaction)."""
    conn.executemany(
        "INSERT INTO dead_letter (record_id, body, sink, reason, dead_ns) VALUES (?, ?, ?, ?, ?)",
        [(record_id, body, sink, reason[:MAX_REASON], now_ns)
         for record_id, body, sink, reason in rows],
    )  # fmt: skip


def requeue(conn: sqlite3.Connection, now_ns: int) -> int:
    """Move every dead letter back into the outbox queue, oldest first (inside the caller's
    transaction); how many."""
    moved = conn.execute(
        "INSERT INTO outbox (record_id, queued_ns, body) "
        "SELECT record_id, ?, body FROM dead_letter ORDER BY id",
        (now_ns,),
    ).rowcount
    conn.execute("DELETE FROM dead_letter")
    return int(moved)


def oldest(conn: sqlite3.Connection, limit: int) -> list[DeadLetter]:
    """The oldest dead letters, with their reasons."""
    rows = conn.execute(
        "SELECT record_id, sink, reason, dead_ns FROM dead_letter ORDER BY id LIMIT ?", (limit,)
    ).fetchall()
    return [DeadLetter(*r) for r in rows]


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM dead_letter").fetchone()[0])
