"""Idempotency keys: a retried request is answered with the record it created, and only then.

A key belongs to one subject of one site: it is kept by a digest of (site, subject_id, key),
so another subject sending the same key gets a record of its own, never that subject's
receipt.
Each key also keeps a fingerprint of what the request asked to record; the same key with a
different choice is refused (409 ``idempotency_key_reused``) rather than answered with the
first record while the new choice is dropped. Keys live for a day, then are pruned.

Everything here runs on the outbox owner's connection, inside its transactions.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import orjson

from gateway.core import row_chunks
from gateway.core.errors import BadRequest
from gateway.core.model import ConsentRecord
from gateway.core.preference_record import PreferenceRecord
from gateway.core.record_codec import Record

log = logging.getLogger("gateway.outbox")

TTL_NS = 24 * 3600 * 1_000_000_000
PRUNE_EVERY_S = 300.0
# Keys forgotten per statement: each statement runs on the loop between group commits (each
# key a row and a place in the digest index: ~5 ms a thousand here), so five minutes of keys
# at a high rate (30,000 at 100 keyed POSTs/s) never stall the loop at once (165 ms measured
# in one statement; 285 ms for the table this one replaced).
PRUNE_CHUNK = 500

# One row per key, appended in the order keys are made (a rowid table: a group's rows go at
# its end, a few pages), found by the key's digest (a small unique index). The table it
# replaces (``idempotency``) was keyed on (site, subject_id, key) and held each receipt: its
# ~450-byte rows went in at random places, so every keyed record dirtied a page of its own
# for the WAL, the fsync and the checkpoint. Measured at 300,000 keys with random subjects
# (groups of 30): lookup, insert, commit and checkpoint ~90 µs a key before, ~39 µs now
# (176 -> 53 MB); through the whole outbox (bench/outbox_keys.py) 80-103 -> 52-69 µs of CPU
# a keyed record, against 21-24 µs without a key.
# The digest keeps neither the subject nor the client's key in the clear; the content hash
# lets a retry be answered with its record's receipt signed again (receipts.py: the same
# token for the same record). ``receipt`` is kept only for keys carried over from the old
# table; ``fingerprint`` is NULL only for keys made before fingerprints (both expire within
# a day of the upgrade).
SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    id INTEGER PRIMARY KEY,
    digest BLOB NOT NULL,
    fingerprint BLOB,
    record_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    content BLOB,
    receipt TEXT,
    created_ns INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS idempotency_keys_digest ON idempotency_keys (digest)
"""
_COLUMNS = "(digest, fingerprint, record_id, recorded_at, content, receipt, created_ns)"
# OR REPLACE: a key expired but not pruned yet (pruning runs every few minutes) is made anew.
_INSERT = f"INSERT OR REPLACE INTO idempotency_keys {_COLUMNS}"
_MAX_KEYS = 500  # per statement: 7 values a row (row_chunks pads to a few sizes)


@functools.lru_cache(maxsize=16)
def _find(count: int) -> str:
    """The stored answers of the keys whose digests are the first ``count`` parameters, made
    since the last one (NULL digests, row_chunks' padding, match nothing)."""
    return (
        "SELECT digest, fingerprint, record_id, recorded_at, content, receipt "
        "FROM idempotency_keys WHERE digest IN (" + ",".join("?" * count) + ") "
        "AND created_ns >= ?"
    )


def key_digest(site: str, subject_id: str, key: str) -> bytes:
    """What a key is kept and looked up by: its (site, subject, key), hashed (16 bytes)."""
    return hashlib.blake2b(
        f"{site}\0{subject_id}\0{key}".encode(), digest_size=16, person=b"cg-idem-key"
    ).digest()


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
    """Where a key applies (its digest: site, subject, key), the fingerprint of the request
    that carries it, and its record's content hash (SHA-256 of the canonical JSON its
    receipt signs: made once per request, kept with the key)."""

    digest: bytes
    fingerprint: str
    content: bytes


class Earlier(NamedTuple):
    """The stored answer of the request that first used a key: its record, and the hash of
    that record's content to sign its receipt again (or, for a key carried over from the old
    table, the receipt itself, and no hash)."""

    record_id: str
    recorded_at: str
    receipt: str
    content_hash: str


# What ``resolve`` says of each append of a group: None, store it; an int, the index of an
# earlier append in the same group it repeats; Earlier, answer with that record; KeyReused,
# refuse it.
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


def scope(record: Record, body: bytes, content: bytes | None = None) -> Scope | None:
    """The key's scope for a record that carries one (``body``: its canonical JSON, whose
    hash ``content`` is, when made already)."""
    key = record.idempotency_key
    if key is None:
        return None
    if content is None:
        content = hashlib.sha256(body).digest()
    return Scope(key_digest(record.site, record.subject_id, key), fingerprint(record), content)


def resolve(conn: sqlite3.Connection, scopes: Sequence[Scope | None], now_ns: int
            ) -> list[Verdict]:  # fmt: skip
    """What to do with each append of a group (inside the group's write transaction); a key
    older than a day is no longer held, even before the pruning removes it."""
    verdicts: list[Verdict] = [None] * len(scopes)
    first: dict[bytes, int] = {}
    for i, s in enumerate(scopes):
        if s is None:
            continue
        j = first.setdefault(s.digest, i)
        if j != i:  # a retry inside the same group
            earlier = scopes[j]
            assert earlier is not None
            verdicts[i] = j if earlier.fingerprint == s.fingerprint else KeyReused()
    digests = list(first)
    for chunk in row_chunks.slices(digests, _MAX_KEYS):
        count = row_chunks.size(len(chunk), _MAX_KEYS)
        params = [*chunk, *[None] * (count - len(chunk)), now_ns - TTL_NS]
        for digest, printed, record_id, recorded_at, content, receipt in conn.execute(
            _find(count), params
        ):
            i = first[digest]
            s = scopes[i]
            assert s is not None
            if printed is not None and printed.hex() != s.fingerprint:
                verdicts[i] = KeyReused()
            else:
                hashed = content.hex() if content is not None else ""
                verdicts[i] = Earlier(record_id, recorded_at, receipt or "", hashed)
    return verdicts


def remember(conn: sqlite3.Connection, keys: Sequence[tuple[Scope, str, str]], now_ns: int) -> None:
    """Keep ``(scope, record_id, recorded_at)`` of each newly stored keyed record (with the
    scope's content hash, which its receipt signs)."""
    rows = [
        (s.digest, bytes.fromhex(s.fingerprint), record_id, at, s.content, None, now_ns)
        for s, record_id, at in keys
    ]  # fmt: skip
    for chunk in row_chunks.slices(rows, _MAX_KEYS):
        conn.execute(*row_chunks.statement(_INSERT, 7, chunk, _MAX_KEYS))


def expired_end(conn: sqlite3.Connection, now_ns: int) -> int:
    """The id below which every key has expired: rows are in the order their keys were made,
    so only the expired head is read (a key made after a clock step back waits for the keys
    before it to expire; a lookup never answers with it after its day all the same)."""
    (end,) = conn.execute(
        "SELECT coalesce((SELECT id FROM idempotency_keys WHERE created_ns >= ? ORDER BY id "
        "LIMIT 1), (SELECT coalesce(max(id), 0) + 1 FROM idempotency_keys))",
        (now_ns - TTL_NS,),
    ).fetchone()
    return int(end)


def prune(conn: sqlite3.Connection, end: int, limit: int) -> int:
    """Forget at most ``limit`` keys below id ``end``, oldest first; how many."""
    return conn.execute(
        "DELETE FROM idempotency_keys WHERE id IN "
        "(SELECT id FROM idempotency_keys WHERE id < ? ORDER BY id LIMIT ?)",
        (end, limit),
    ).rowcount


def create(conn: sqlite3.Connection, now_ns: int | None = None) -> None:
    """Create the table; carry over the unexpired keys of the table it replaces
    (``idempotency``, keyed in the clear, with receipts; or, older still, keyed per site
    only), a row at a time (a busy worker's day of keys never sits in memory), then drop it."""
    columns = [row[1] for row in conn.execute("PRAGMA table_info(idempotency)")]
    if not columns:
        for statement in SCHEMA.split(";"):
            conn.execute(statement)
        return
    since = (time.time_ns() if now_ns is None else now_ns) - TTL_NS
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA.split(";"):
            conn.execute(statement)
        carried = conn.executemany(
            f"{_INSERT} VALUES (?, ?, ?, ?, ?, ?, ?)", _carried(conn, columns, since)
        ).rowcount
        conn.execute("DROP TABLE idempotency")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    log.info("outbox idempotency keys carried over to idempotency_keys (%d)", carried)


def _carried(
    conn: sqlite3.Connection, columns: list[str], since_ns: int
) -> Iterator[tuple[Any, ...]]:
    """The old table's keys made since ``since_ns``, as rows of the new one; a table keyed
    per site only names the subject in its receipts (a key whose receipt names none goes)."""
    scoped = "subject_id" in columns
    rows = conn.execute(
        "SELECT site, " + ("subject_id, " if scoped else "") + "key, "
        + ("fingerprint, " if scoped else "") + "record_id, recorded_at, receipt, created_ns "
        "FROM idempotency WHERE created_ns >= ?",
        (since_ns,),
    )  # fmt: skip
    for row in rows:
        if scoped:
            site, subject, key, printed, record_id, recorded_at, receipt, made = row
        else:
            site, key, record_id, recorded_at, receipt, made = row
            subject, printed = _receipt_subject(receipt), None
        if subject is not None:
            yield (key_digest(site, subject, key), bytes.fromhex(printed) if printed else None,
                   record_id, recorded_at, None, receipt, made)  # fmt: skip


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
