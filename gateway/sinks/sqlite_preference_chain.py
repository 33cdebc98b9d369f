"""Preference records in the embedded SQLite store's audit chain (kind ``preference``), linked
in the write transaction that stores them, as PostgreSQL's trigger links them
(gateway/sinks/postgres_audit.py) and as gateway/sinks/sqlite_audit.py links consents: one
chain per node, in (recorded_at, record_id) order within a batch.

A record's digest is ``split_digest`` (gateway/audit/chain.py) with the fields erasure blanks
(PREFERENCE_ERASED_FIELDS: IP prefix, user agent, idempotency key) as its personal part, whose
digest is kept beside the link (``audit_chain.personal_digest``): erasing them leaves the link
verifiable; changing anything else, or the kept digest of an erased record, breaks it.
The linking itself is the consents' (``sqlite_audit.link_records``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.core.hashchain import personal_digest, split_digest
from gateway.sinks import sqlite_audit
from gateway.sinks.rights import PREFERENCE_ERASED_FIELDS
from gateway.sinks.sqlite_common import stored_since

KIND = "preference"
PERSONAL = tuple(sorted(PREFERENCE_ERASED_FIELDS))


def is_erased(data: Mapping[str, Any]) -> bool:
    return all(data.get(k) == v for k, v in PREFERENCE_ERASED_FIELDS.items())


def record_digest(data: Mapping[str, Any], kept_personal: bytes | None = None) -> bytes:
    """The digest a preference record's link commits to; an erased record's personal part
    is the one kept beside its link."""
    if kept_personal is not None and is_erased(data):
        return split_digest(data, PERSONAL, kept_personal)
    return _digests(data)[1]


def last_seq(conn: sqlite3.Connection) -> int:
    """The newest stored preference record's seq: what a write links after."""
    (seq,) = conn.execute("SELECT coalesce(max(seq), 0) FROM preference_records").fetchone()
    return int(seq)


def follow(conn: sqlite3.Connection, after_seq: int, chunk: int = 10_000) -> None:
    """Link the preference records stored with ``seq > after_seq`` (in the caller's write
    transaction), ``chunk`` at a time: a batch is one chunk; linking an existing store at
    migration holds one chunk in memory."""
    for rows in stored_since(conn, "preference_records", after_seq, chunk):
        _follow(conn, rows)


def _digests(data: Mapping[str, Any]) -> tuple[bytes, bytes]:
    kept = personal_digest(data, PERSONAL)
    return kept, split_digest(data, PERSONAL, kept)


def _follow(conn: sqlite3.Connection, rows: list[tuple[int, str]]) -> None:
    sqlite_audit.link_records(
        conn, [(seq, orjson.loads(body)) for seq, body in rows], KIND, _digests
    )
