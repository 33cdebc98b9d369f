"""The embedded central store: SQLite in the data dir, zero set-up, one node."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.core import row_chunks
from gateway.core.record_codec import CONSENT_KIND, LINK_KIND, PREFERENCE_KIND, Record, kind_of
from gateway.sinks import sqlite_audit, sqlite_preference_chain
from gateway.sinks.base import HISTORY_LIMIT
from gateway.sinks.preference_state import SQLITE_SCHEMA, sqlite_fold
from gateway.sinks.sqlite_common import SqliteOwned, connect, transaction_of

FILE_NAME = "store.sqlite3"
SCHEMA_VERSION = 4  # 3: the audit trail (gateway/sinks/sqlite_audit.py); 4: preferences in it

# One row per record in a rowid table (appends are cheap; WITHOUT ROWID suits small rows,
# not ~800-byte bodies) and ONE index per record: (site, subject, time, record_id). It
# answers the history, its first row is the current state (newest wins by recorded_at, then
# record_id, whatever the arrival order), and being UNIQUE it makes a redelivered record a
# no-op: a record_id always comes with the same site, subject and time. Measured: ~20 µs of
# store CPU per record instead of ~60 µs with a latest-state table and two indexes.
_RECORD_TABLE = """\
CREATE TABLE IF NOT EXISTS {table} (
    seq INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    record_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS {table}_subject
    ON {table} (site, subject_id, recorded_at, record_id);
"""
_SCHEMA = (
    "\nCREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);\n"
    + "".join(
        _RECORD_TABLE.format(table=table)
        for table in ("consent_records", "preference_records", "identity_link_records")
    )
    + """CREATE TABLE IF NOT EXISTS banner_versions (
    site TEXT NOT NULL,
    banner_version TEXT NOT NULL,
    consent_revision TEXT NOT NULL,
    texts TEXT NOT NULL,
    published_at TEXT NOT NULL,
    PRIMARY KEY (site, banner_version)
) WITHOUT ROWID;
"""
)

_SCHEMA += SQLITE_SCHEMA

# Version 1 kept records WITHOUT ROWID keyed by record_id plus a latest_state table.
_MIGRATE_FROM_1 = """
ALTER TABLE consent_records RENAME TO consent_records_v1;
DROP INDEX IF EXISTS consent_records_subject;
"""
_COPY_FROM_1 = """
INSERT OR IGNORE INTO consent_records (site, subject_id, recorded_at, record_id, body)
SELECT site, subject_id, recorded_at, record_id, body FROM consent_records_v1
ORDER BY recorded_at, record_id;
DROP TABLE consent_records_v1;
DROP TABLE IF EXISTS latest_state;
"""

# A batch of consents is one multi-row INSERT ... VALUES (a few, past SQLite's variable
# limit): the columns come from the records the caller has decoded already, so SQLite parses
# no JSON, and the chain links those records without reading them back (sqlite_audit.py).
# row_chunks pads a chunk to one of a few statement sizes, so the connection's statement cache
# keeps them all (and stays small).
# recorded_at is fixed-width RFC 3339 UTC, so text order is time order.
_MAX_ROWS = 200  # 5 parameters a row: 1,000, far below SQLite's 32,766


_INSERT_CONSENTS = (
    "INSERT OR IGNORE INTO consent_records (site, subject_id, recorded_at, record_id, body)"
)


class SqliteStore(SqliteOwned):
    """The default store; each call runs in a worker thread, one at a time."""

    name = "sqlite"

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self.path)
        _migrate(conn)
        return conn

    async def write_batch(self, records: Sequence[Record]) -> None:
        objects = [r.as_json() for r in records]
        await self.write_stored([orjson.dumps(o).decode() for o in objects], objects)

    async def write_json(self, record_ids: Sequence[str], bodies: Sequence[str]) -> None:
        await self.write_stored(bodies, [orjson.loads(b) for b in bodies])

    async def write_stored(
        self, bodies: Sequence[str], objects: Sequence[Mapping[str, Any]]
    ) -> None:
        """Store records given as their stored JSON and its decoded object (the forwarder
        has both): the body is kept as it is, the columns and the audit chain are read from
        the object, so no record is encoded or parsed again here."""
        consents: dict[str, tuple[str, Mapping[str, Any]]] = {}
        kinds: dict[str, list[str]] = {}
        for body, obj in zip(bodies, objects, strict=True):
            kind = kind_of(obj)
            if kind == CONSENT_KIND:
                # One per record id: a record id always comes with the same record.
                consents.setdefault(str(obj["record_id"]), (body, obj))
            else:
                kinds.setdefault(kind, []).append(body)
        if consents:
            await self._call(_write, list(consents.values()))
        if PREFERENCE_KIND in kinds or LINK_KIND in kinds:
            await self._call(
                _write_others, kinds.get(PREFERENCE_KIND, []), kinds.get(LINK_KIND, [])
            )

    async def preference_history(self, site: str, subject_id: str) -> list[dict[str, Any]]:
        """A subject's preference records, newest first."""
        result: list[dict[str, Any]] = await self._call(_preference_history, site, subject_id)
        return result

    async def subject_history(self, site: str, subject_id: str) -> dict[str, Any]:
        return await self._call(_history, site, subject_id)

    async def keyed_record(
        self, kind: str, site: str, subject_id: str, key: str, since: str
    ) -> dict[str, Any] | None:
        table = _KEYED_TABLES[kind]
        found: dict[str, Any] | None = await self._call(_keyed, table, site, subject_id, key, since)
        return found

    async def publish_version(
        self,
        site_id: str,
        banner_version: str,
        consent_revision: str,
        texts_by_locale: Mapping[str, Mapping[str, Any]],
    ) -> None:
        texts = orjson.dumps(
            {k: dict(v) for k, v in texts_by_locale.items()}, option=orjson.OPT_SORT_KEYS
        ).decode()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        await self._call(_publish, (site_id, banner_version, consent_revision, texts, now))

    async def banner_version(self, site_id: str, banner_version: str) -> dict[str, Any] | None:
        return await self._call(_version, site_id, banner_version)

    async def list_versions(self, site_id: str) -> list[dict[str, Any]]:
        return await self._call(_versions, site_id)


def _migrate(conn: sqlite3.Connection) -> None:
    """Create the schema, or bring a version 1 store to version 2 in one transaction."""

    def run(script: str) -> None:
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)

    def body(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] if row else None
        if version == 1:
            run(_MIGRATE_FROM_1)
        run(_SCHEMA + ";" + sqlite_audit.SCHEMA)
        if version == 1:
            run(_COPY_FROM_1)
        if version is None:
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        elif version < SCHEMA_VERSION:
            # Records stored before the audit trail: linked and counted now, in store order.
            if version < 3:
                sqlite_audit.follow(conn, 0)
            # Preference records stored before they were chained (version 3): linked now.
            sqlite_preference_chain.follow(conn, 0)
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    transaction_of(body)(conn)


def _write(conn: sqlite3.Connection, batch: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Store consent records as ``(body, object)``, each record id once; a record stored
    before (a redelivery) is ignored, and only the rows stored now are linked and counted."""
    # One transaction: the batch, its chain links and its report counts, or none of them.
    conn.execute("BEGIN IMMEDIATE")
    try:
        (last,) = conn.execute("SELECT coalesce(max(seq), 0) FROM consent_records").fetchone()
        for chunk in row_chunks.slices(batch, _MAX_ROWS):
            rows = [(obj["site"], obj["subject_id"], obj["recorded_at"], obj["record_id"], body)
                    for body, obj in chunk]  # fmt: skip
            conn.execute(*row_chunks.statement(_INSERT_CONSENTS, 5, rows, _MAX_ROWS))
        # The rows this transaction stored (not the ignored redeliveries), by record id.
        objects = {str(obj["record_id"]): obj for _, obj in batch}
        stored = conn.execute(
            "SELECT seq, record_id FROM consent_records WHERE seq > ?", (last,)
        ).fetchall()
        sqlite_audit.link_stored(conn, [(seq, objects[record_id]) for seq, record_id in stored])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _append(conn: sqlite3.Connection, table: str, bodies: list[str]) -> None:
    """Store records in one of the append-only tables (one statement, as consents)."""
    if bodies:
        conn.execute(
            f"INSERT OR IGNORE INTO {table} "
            "(site, subject_id, recorded_at, record_id, body) "
            "SELECT json_extract(value, '$.site'), json_extract(value, '$.subject_id'), "
            "json_extract(value, '$.recorded_at'), json_extract(value, '$.record_id'), value "
            "FROM json_each(?)",
            ("[" + ",".join(bodies) + "]",),
        )


def _write_others(conn: sqlite3.Connection, preferences: list[str], links: list[str]) -> None:
    """Store preference and link records and fold the preference changes into the latest
    state, in one transaction: a redelivered record is stored once, and folding it again
    changes nothing (leaf stamps; the links themselves are in the directory already)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        after = sqlite_preference_chain.last_seq(conn)
        _append(conn, "preference_records", preferences)
        sqlite_preference_chain.follow(conn, after)  # chained in the same transaction
        sqlite_fold(conn, [orjson.loads(b) for b in preferences])
        _append(conn, "identity_link_records", links)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _preference_history(conn: sqlite3.Connection, site: str, subject_id: str
                        ) -> list[dict[str, Any]]:  # fmt: skip
    rows = conn.execute(
        "SELECT body FROM preference_records WHERE site = ? AND subject_id = ? "
        "ORDER BY recorded_at DESC, record_id DESC LIMIT ?",
        (site, subject_id, HISTORY_LIMIT),
    ).fetchall()
    return [orjson.loads(r[0]) for r in rows]


# The tables a keyed record is looked for in, by kind (names from here only, never a caller's).
_KEYED_TABLES = {CONSENT_KIND: "consent_records", PREFERENCE_KIND: "preference_records"}


def _keyed(
    conn: sqlite3.Connection, table: str, site: str, subject_id: str, key: str, since: str
) -> dict[str, Any] | None:
    """The subject's first record in ``table`` with ``key`` since ``since``: the subject
    index narrows it to the subject's records of the period (text order is time order)."""
    row = conn.execute(
        f"SELECT body FROM {table} WHERE site = ? AND subject_id = ? AND recorded_at >= ? "
        "AND json_extract(body, '$.idempotency_key') = ? ORDER BY recorded_at, record_id LIMIT 1",
        (site, subject_id, since, key),
    ).fetchone()
    return None if row is None else dict(orjson.loads(row[0]))


def _history(conn: sqlite3.Connection, site: str, subject_id: str) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT body FROM consent_records WHERE site = ? AND subject_id = ? "
        "ORDER BY recorded_at DESC, record_id DESC LIMIT ?",
        (site, subject_id, HISTORY_LIMIT),
    ).fetchall()
    history = [orjson.loads(r[0]) for r in rows]
    # The newest record is the current state: no latest-state table to keep in step.
    return {"current": history[0] if history else None, "history": history}


def _publish(conn: sqlite3.Connection, row: tuple[str, str, str, str, str]) -> None:
    conn.execute("INSERT OR IGNORE INTO banner_versions VALUES (?, ?, ?, ?, ?)", row)


def _versions(conn: sqlite3.Connection, site: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT banner_version, consent_revision, published_at FROM banner_versions "
        "WHERE site = ? ORDER BY published_at DESC, banner_version",
        (site,),
    ).fetchall()
    return [{"banner_version": r[0], "consent_revision": r[1], "published_at": r[2]} for r in rows]


def _version(conn: sqlite3.Connection, site: str, version: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT consent_revision, texts, published_at FROM banner_versions "
        "WHERE site = ? AND banner_version = ?",
        (site, version),
    ).fetchone()
    if row is None:
        return None
    return {
        "site": site,
        "banner_version": version,
        "consent_revision": row[0],
        "texts": orjson.loads(row[1]),
        "published_at": row[2],
    }
