"""Erasure and correction across the embedded SQLite store's tables: a subject's records,
identity links and preference states (the rights store's ``erase``, ``relink``,
``tombstones``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from gateway.sinks.directory_sqlite import SqliteDirectory
from gateway.sinks.rights import (
    ERASED_FIELDS,
    PREFERENCE_ERASED_FIELDS,
    Erasure,
    Relink,
    content_hash,
    tombstone,
)
from gateway.sinks.sqlite import SqliteStore
from gateway.sinks.sqlite_common import transaction_of


def erase(
    conn: sqlite3.Connection, site: str, subject_ids: Sequence[str], request_id: str, at: str
) -> Erasure:
    """Blank the subjects' personal fields (a tombstone keeps each record's content hash),
    delete their identity links and preference extras, in one transaction; then overwrite
    the erased values in the file."""
    erased = orjson.dumps(sorted(ERASED_FIELDS)).decode()

    def run(conn: sqlite3.Connection) -> Erasure:
        records = links = states = 0
        for subject in subject_ids:
            rows = conn.execute(
                "SELECT seq, record_id, body FROM consent_records "
                "WHERE site = ? AND subject_id = ?",
                (site, subject),
            ).fetchall()
            for seq, record_id, text in rows:
                data = orjson.loads(text)
                if all(data.get(k) == v for k, v in ERASED_FIELDS.items()):
                    continue  # erased already, or nothing personal to erase
                conn.execute(
                    "INSERT OR IGNORE INTO erasure_tombstones VALUES (?,?,?,?,?,?,?)",
                    (site, record_id, subject, content_hash(data), erased, at, request_id),
                )
                data.update(ERASED_FIELDS)
                conn.execute(
                    "UPDATE consent_records SET body = ? WHERE seq = ?",
                    (orjson.dumps(data).decode(), seq),
                )
                records += 1
            links += conn.execute(
                "DELETE FROM identity_links WHERE site = ? AND subject_id = ?",
                (site, subject),
            ).rowcount
            states += conn.execute(
                "UPDATE preference_state SET extra = '{}' "
                "WHERE site = ? AND subject_id = ? AND extra != '{}'",
                (site, subject),
            ).rowcount
            # The links' history and the request facts of preference changes go too.
            conn.execute(
                "DELETE FROM identity_link_records WHERE site = ? AND subject_id = ?",
                (site, subject),
            )
            for seq, text in conn.execute(
                "SELECT seq, body FROM preference_records WHERE site = ? AND subject_id = ?",
                (site, subject),
            ).fetchall():
                data = orjson.loads(text)
                data.update(PREFERENCE_ERASED_FIELDS)
                conn.execute(
                    "UPDATE preference_records SET body = ? WHERE seq = ?",
                    (orjson.dumps(data).decode(), seq),
                )
        return Erasure(records, links, states)

    result = transaction_of(run)(conn)
    # Erased values must not survive in freed pages or the WAL: overwrite them now.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return result


def relink(conn: sqlite3.Connection, r: Relink) -> None:
    """Correction: drop the subjects' links to ``unlink``, add ``(type, hash)`` links."""

    def run(conn: sqlite3.Connection) -> None:
        for subject in r.subject_ids:
            conn.executemany(
                "DELETE FROM identity_links "
                "WHERE site = ? AND subject_id = ? AND identity_hash = ?",
                [(r.site, subject, h) for h in r.unlink],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO identity_links VALUES (?, ?, ?, ?, ?, 'rights')",
                [(r.site, h, subject, t, r.at) for t, h in r.link],
            )

    transaction_of(run)(conn)


def tombstones(conn: sqlite3.Connection, site: str, subject_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT record_id, content_hash, erased_fields, erased_at, request_id "
        "FROM erasure_tombstones WHERE site = ? AND subject_id = ? ORDER BY record_id",
        (site, subject_id),
    )
    return [tombstone(r) for r in rows]


async def ensure_tables(path: Path) -> None:
    """Create the record and directory tables erasure reaches, if no service has yet."""
    for owner in (SqliteStore(path), SqliteDirectory(path)):
        await owner.open()
        await owner.close()
