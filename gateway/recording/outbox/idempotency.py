"""Idempotency keys: a retried request is answered with the record it first created.

A key is kept per site for a day, then pruned. Everything here runs on the outbox owner's
connection, inside its group-commit transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

import orjson

from gateway.core.model import ConsentRecord

TTL_NS = 24 * 3600 * 1_000_000_000
PRUNE_EVERY_S = 300.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    site TEXT NOT NULL,
    key TEXT NOT NULL,
    record_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    receipt TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    PRIMARY KEY (site, key)
) WITHOUT ROWID;
"""

_FIND = """
SELECT j.key, i.record_id, i.recorded_at, i.receipt
FROM json_each(?1) AS j JOIN idempotency AS i
ON i.site = json_extract(j.value, '$[0]') AND i.key = json_extract(j.value, '$[1]')
"""
_INSERT = """
INSERT INTO idempotency (site, key, record_id, recorded_at, receipt, created_ns)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), json_extract(value, '$[4]'), ?1
FROM json_each(?2)
"""


class Scope(NamedTuple):
    """Where a key applies."""

    site: str
    key: str


class Earlier(NamedTuple):
    """The stored answer of the request that first used a key."""

    record_id: str
    recorded_at: str
    receipt: str


# What ``resolve`` says of each append: None, store it; an int, the index of an earlier append
# in the same group it repeats; Earlier, answer with that stored record.
Verdict = None | int | Earlier


def scope(record: ConsentRecord) -> Scope | None:
    """The key's scope for a record that carries one."""
    key = record.idempotency_key
    return None if key is None else Scope(record.site, key)


def resolve(conn: sqlite3.Connection, scopes: Sequence[Scope | None]) -> list[Verdict]:
    """What to do with each append of a group (inside the group's write transaction)."""
    verdicts: list[Verdict] = [None] * len(scopes)
    first: dict[Scope, int] = {}
    for i, s in enumerate(scopes):
        if s is None:
            continue
        j = first.setdefault(s, i)
        if j != i:  # a retry inside the same group
            verdicts[i] = j
    if first:
        scoped = list(first)
        for index, record_id, recorded_at, receipt in conn.execute(
            _FIND, (orjson.dumps([list(s) for s in scoped]).decode(),)
        ):
            verdicts[first[scoped[index]]] = Earlier(record_id, recorded_at, receipt)
    return verdicts


def remember(
    conn: sqlite3.Connection, keys: Sequence[tuple[Scope, str, str, str]], now_ns: int
) -> None:
    """Keep ``(scope, record_id, recorded_at, receipt)`` of each newly stored keyed record."""
    if keys:
        rows = [[*s, record_id, at, receipt] for s, record_id, at, receipt in keys]
        conn.execute(_INSERT, (now_ns, orjson.dumps(rows).decode()))


def prune(conn: sqlite3.Connection, now_ns: int) -> int:
    """Forget keys older than a day; how many."""
    cursor = conn.execute("DELETE FROM idempotency WHERE created_ns < ?", (now_ns - TTL_NS,))
    return int(cursor.rowcount)
