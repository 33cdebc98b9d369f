"""Idempotency keys: a retried request is answered with the record it created, and only then.

A key belongs to one subject of one site: the table is keyed on (site, subject_id, key), so
another subject sending the same key gets a record of its own, never that subject's receipt.
Each key also keeps a fingerprint of what the request asked to record; the same key with a
different choice is refused (409 ``idempotency_key_reused``) rather than answered with the
first record while the new choice is dropped. Keys live for a day, then are pruned.

Everything here runs on the outbox owner's connection, inside its transactions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

import orjson

from gateway.core.errors import BadRequest
from gateway.core.model import ConsentRecord
from gateway.core.preference_record import PreferenceRecord
from gateway.core.record_codec import Record

log = logging.getLogger("gateway.outbox")

TTL_NS = 24 * 3600 * 1_000_000_000
PRUNE_EVERY_S = 300.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    site TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT,
    record_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    receipt TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    PRIMARY KEY (site, subject_id, key)
) WITHOUT ROWID
"""
# fingerprint is NULL only for keys carried over from a file made before fingerprints: those
# replay for any content of their subject, as they did, until they expire a day later.

# The stored answers of keys (site, subject_id, key) made since ?2, with each one's index in
# the JSON array ?1 of the keys asked for.
_FIND = """
SELECT j.key, i.fingerprint, i.record_id, i.recorded_at, i.receipt
FROM json_each(?1) AS j JOIN idempotency AS i
ON i.site = json_extract(j.value, '$[0]') AND i.subject_id = json_extract(j.value, '$[1]')
AND i.key = json_extract(j.value, '$[2]')
WHERE i.created_ns >= ?2
"""
# OR REPLACE: a key expired but not pruned yet (pruning runs every few minutes) is made anew.
_INSERT = """
INSERT OR REPLACE INTO idempotency
    (site, subject_id, key, fingerprint, record_id, recorded_at, receipt, created_ns)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
       json_extract(value, '$[6]'), ?1
FROM json_each(?2)
"""


class KeyReused(BadRequest):
    """The key was already used by this subject for a different choice."""

    def __init__(self) -> None:
        super().__init__(
            "idempotency_key_reused",
            "this idempotency_key was already used for a different request; "
            "send a new key for a new choice",
            field="idempotency_key",
            status_code=409,
        )


class Scope(NamedTuple):
    """Where a key applies, and the fingerprint of the request that carries it."""

    site: str
    subject_id: str
    key: str
    fingerprint: str


class Earlier(NamedTuple):
    """The stored answer of the request that first used a key."""

    record_id: str
    recorded_at: str
    receipt: str


# What ``resolve`` says of each append: None, store it; an int, the index of an earlier append
# in the same group it repeats; Earlier, answer with that record; KeyReused, refuse it.
Verdict = None | int | Earlier | KeyReused


def fingerprint(record: Record) -> str:
    """A digest of what the client asked to record (not what the server added to it)."""
    content: tuple[object, ...]
    if isinstance(record, ConsentRecord):
        content = (
            record.banner_version, record.action, record.choices, record.channel,
            record.language, record.page_url, record.withdraws,
        )  # fmt: skip
    elif isinstance(record, PreferenceRecord):  # its kind first: never a consent's print
        content = (
            record.kind, record.product_line, record.preferences, record.channel,
            record.evidence, record.actor,
        )  # fmt: skip
    else:
        content = (record.kind, record.identity_type, record.identity_hash, record.source)
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def scope(record: Record, printed: str | None = None) -> Scope | None:
    """The key's scope for a record that carries one (``printed``: its fingerprint, if the
    caller made it already)."""
    key = record.idempotency_key
    if key is None:
        return None
    return Scope(record.site, record.subject_id, key, printed or fingerprint(record))


def resolve(conn: sqlite3.Connection, scopes: Sequence[Scope | None], now_ns: int
            ) -> list[Verdict]:  # fmt: skip
    """What to do with each append of a group (inside the group's write transaction); a key
    older than a day is no longer held, even before the pruning removes it."""
    verdicts: list[Verdict] = [None] * len(scopes)
    first: dict[tuple[str, str, str], int] = {}
    for i, s in enumerate(scopes):
        if s is None:
            continue
        j = first.setdefault((s.site, s.subject_id, s.key), i)
        if j != i:  # a retry inside the same group
            earlier = scopes[j]
            assert earlier is not None
            verdicts[i] = j if earlier.fingerprint == s.fingerprint else KeyReused()
    if not first:
        return verdicts
    triples = list(first)
    for index, stored_print, record_id, recorded_at, receipt in conn.execute(
        _FIND, (orjson.dumps(triples).decode(), now_ns - TTL_NS)
    ):
        i = first[triples[index]]
        s = scopes[i]
        assert s is not None
        if stored_print is not None and stored_print != s.fingerprint:
            verdicts[i] = KeyReused()
        else:
            verdicts[i] = Earlier(record_id, recorded_at, receipt)
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
    return conn.execute("DELETE FROM idempotency WHERE created_ns < ?", (now_ns - TTL_NS,)).rowcount


def create(conn: sqlite3.Connection) -> None:
    """Create the table, or convert one that scoped keys to the site only."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(idempotency)")]
    if not columns:
        conn.execute(SCHEMA)
        return
    if "subject_id" in columns:
        return
    rows = conn.execute(
        "SELECT site, key, record_id, recorded_at, receipt, created_ns FROM idempotency"
    ).fetchall()
    kept = []
    for site, key, record_id, recorded_at, receipt, created_ns in rows:
        subject = _receipt_subject(receipt)
        if subject is not None:
            kept.append((site, subject, key, None, record_id, recorded_at, receipt, created_ns))
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DROP TABLE idempotency")
        conn.execute(SCHEMA)
        conn.executemany("INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?, ?, ?)", kept)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    log.info("outbox idempotency keys scoped to their subjects (%d kept)", len(kept))


def _receipt_subject(receipt: str) -> str | None:
    """The subject a receipt we issued names (``v1.<payload>.<signature>``, receipts.py); the
    key's row is ours, so its receipt needs no verifying to tell whose key it was."""
    parts = receipt.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    subject = payload.get("u") if isinstance(payload, dict) else None
    return subject if isinstance(subject, str) else None
