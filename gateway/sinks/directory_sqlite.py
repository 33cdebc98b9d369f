"""The directory in the embedded SQLite store: its own tables in the same database file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from gateway.sinks.directory import (
    MAX_SUBJECTS_PER_IDENTITY,
    ContactRow,
    Link,
    PreferenceState,
    StoredKey,
    contact_row,
)
from gateway.sinks.preference_state import SQLITE_SCHEMA
from gateway.sinks.sqlite_common import SqliteOwned, connect, create_tables, transaction_of

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployment_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS used_tokens (
    nonce TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS used_tokens_expiry ON used_tokens (expires_at);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS identity_links (
    site TEXT NOT NULL,
    identity_hash TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    identity_type TEXT NOT NULL,
    linked_at TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (site, identity_hash, subject_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS identity_links_subject ON identity_links (site, subject_id);
"""

# Newest wins whatever the arrival order: a redelivered or late state never moves it back.
_UPSERT = """
INSERT INTO preference_state VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (site, subject_id, product_line) DO UPDATE SET
    preferences = excluded.preferences, record_id = excluded.record_id,
    updated_at = excluded.updated_at, extra = excluded.extra
WHERE (excluded.updated_at, excluded.record_id)
    > (preference_state.updated_at, preference_state.record_id)
"""

_FORGET_TOKENS = """
DELETE FROM used_tokens WHERE nonce IN
    (SELECT nonce FROM used_tokens WHERE expires_at <= ? ORDER BY expires_at LIMIT 100)
"""

_CONTACT = """
SELECT h.value, l.subject_id, s.product_line, s.preferences, s.record_id, s.updated_at
FROM json_each(?) h
JOIN identity_links l ON l.site = ? AND l.identity_hash = h.value
LEFT JOIN preference_state s ON s.site = l.site AND s.subject_id = l.subject_id
    AND s.product_line IN ('', ?)
"""


_LINK = "INSERT OR IGNORE INTO identity_links VALUES (?, ?, ?, ?, ?, ?)"


def _link_row(k: Link) -> tuple[str, ...]:
    return (k.site, k.identity_hash, k.subject_id, k.identity_type, k.linked_at, k.source)


def _key(row: Any) -> StoredKey:
    return StoredKey(row[0], row[1], row[2], tuple(orjson.loads(row[3])), row[4], row[5], row[6])


def _state(site: str, subject: str, row: Sequence[Any]) -> PreferenceState:
    return PreferenceState(
        site, subject, row[0], orjson.loads(row[1]), row[2], row[3], orjson.loads(row[4])
    )


class SqliteDirectory(SqliteOwned):
    """Each call runs in a worker thread, one at a time, on a connection of its own."""

    name = "sqlite"
    what = "the directory"
    thread_name = "sqlite-directory"

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self.path)
        create_tables(conn, _SCHEMA + SQLITE_SCHEMA)
        return conn

    async def deployment_secret(self, name: str, make: Callable[[], str]) -> str:
        def run(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT OR IGNORE INTO deployment_secrets VALUES (?, ?)", (name, make()))
            row = conn.execute("SELECT value FROM deployment_secrets WHERE name = ?", (name,))
            return str(row.fetchone()[0])

        return await self._call(run)

    async def link_once(self, nonce: str, expires_at: int, now: int, links: Sequence[Link]) -> bool:
        rows = [_link_row(k) for k in links]

        def run(conn: sqlite3.Connection) -> bool:
            conn.execute(_FORGET_TOKENS, (now,))
            fresh = (
                conn.execute(
                    "INSERT OR IGNORE INTO used_tokens VALUES (?, ?)", (nonce, expires_at)
                ).rowcount
                == 1
            )
            if fresh:
                conn.executemany(_LINK, rows)
            return fresh

        return await self._call(transaction_of(run))

    async def add_key(self, key: StoredKey) -> None:
        row = (
            key.key_id,
            key.site,
            key.name,
            orjson.dumps(list(key.scopes)).decode(),
            key.secret_hash,
            key.created_at,
            key.revoked_at,
        )
        await self._call(lambda c: c.execute("INSERT INTO api_keys VALUES (?,?,?,?,?,?,?)", row))

    async def get_key(self, key_id: str) -> StoredKey | None:
        def run(conn: sqlite3.Connection) -> StoredKey | None:
            row = conn.execute("SELECT * FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
            return None if row is None else _key(row)

        return await self._call(run)

    async def list_keys(self, site: str | None) -> list[StoredKey]:
        def run(conn: sqlite3.Connection) -> list[StoredKey]:
            rows = conn.execute(
                "SELECT * FROM api_keys WHERE ? IS NULL OR site = ? ORDER BY site, created_at",
                (site, site),
            )
            return [_key(r) for r in rows]

        return await self._call(run)

    async def revoke_key(self, key_id: str, at: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (at, key_id),
            )
            return cursor.rowcount == 1

        return await self._call(run)

    async def link(self, links: Sequence[Link]) -> None:
        rows = [_link_row(k) for k in links]

        await self._call(transaction_of(lambda c: c.executemany(_LINK, rows)))

    async def subjects_for(self, site: str, identity_hash: str) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT subject_id FROM identity_links WHERE site = ? AND identity_hash = ? "
                "ORDER BY linked_at DESC, subject_id LIMIT ?",
                (site, identity_hash, MAX_SUBJECTS_PER_IDENTITY),
            )
            return [r[0] for r in rows]

        return await self._call(run)

    async def identity_types(self, site: str, subject_id: str) -> list[str]:
        def run(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT DISTINCT identity_type FROM identity_links "
                "WHERE site = ? AND subject_id = ? ORDER BY identity_type",
                (site, subject_id),
            )
            return [r[0] for r in rows]

        return await self._call(run)

    async def identities_of(
        self, site: str, subject_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, str]]]:
        subjects = orjson.dumps(list(dict.fromkeys(subject_ids))).decode()

        def run(conn: sqlite3.Connection) -> dict[str, list[tuple[str, str]]]:
            rows = conn.execute(
                "SELECT l.subject_id, l.identity_type, l.identity_hash FROM json_each(?) s "
                "JOIN identity_links l ON l.site = ? AND l.subject_id = s.value "
                "ORDER BY l.subject_id, l.identity_type, l.identity_hash",
                (subjects, site),
            )
            out: dict[str, list[tuple[str, str]]] = {}
            for subject, type_, digest in rows:
                out.setdefault(subject, []).append((type_, digest))
            return out

        result: dict[str, list[tuple[str, str]]] = await self._call(run)
        return result

    async def stamps_of(
        self, site: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, str]]:
        wanted = orjson.dumps([list(k) for k in keys]).decode()

        def run(conn: sqlite3.Connection) -> dict[tuple[str, str], dict[str, str]]:
            rows = conn.execute(
                "SELECT s.subject_id, s.product_line, json_extract(s.extra, '$.stamps') "
                "FROM json_each(?) k JOIN preference_state s ON s.site = ? "
                "AND s.subject_id = json_extract(k.value, '$[0]') "
                "AND s.product_line = json_extract(k.value, '$[1]')",
                (wanted, site),
            )
            return {(r[0], r[1]): orjson.loads(r[2]) for r in rows if r[2] is not None}

        result: dict[tuple[str, str], dict[str, str]] = await self._call(run)
        return result

    async def write_preferences(self, states: Sequence[PreferenceState]) -> None:
        rows = [
            (
                s.site,
                s.subject_id,
                s.product_line,
                orjson.dumps(s.preferences).decode(),
                s.record_id,
                s.updated_at,
                orjson.dumps(s.extra).decode(),
            )
            for s in states
        ]

        await self._call(transaction_of(lambda c: c.executemany(_UPSERT, rows)))

    async def preferences_of(self, site: str, subject_id: str) -> list[PreferenceState]:
        def run(conn: sqlite3.Connection) -> list[PreferenceState]:
            rows = conn.execute(
                "SELECT product_line, preferences, record_id, updated_at, extra "
                "FROM preference_state WHERE site = ? AND subject_id = ? ORDER BY product_line",
                (site, subject_id),
            )
            return [_state(site, subject_id, r) for r in rows]

        return await self._call(run)

    async def contact_rows(
        self, site: str, identity_hashes: Sequence[str], product_line: str
    ) -> list[ContactRow]:
        hashes = orjson.dumps(list(dict.fromkeys(identity_hashes))).decode()

        def run(conn: sqlite3.Connection) -> list[ContactRow]:
            rows = conn.execute(_CONTACT, (hashes, site, product_line)).fetchall()
            return [contact_row(r) for r in rows]

        return await self._call(run)
