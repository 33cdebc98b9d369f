"""The rights tables in the embedded SQLite store (erasure across its tables:
erasure_sqlite)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.sinks import erasure_sqlite, rights_chain, sqlite_audit
from gateway.sinks.rights import (
    COLUMNS,
    OPEN_STATES,
    Erasure,
    Event,
    Relink,
    StoredRequest,
    SystemPart,
    Transition,
    column_value,
    request_from,
)
from gateway.sinks.sqlite_common import SqliteOwned, connect, create_tables, transaction_of

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS rights_requests (
    request_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    region TEXT NOT NULL,
    verification TEXT NOT NULL,
    subject_ids TEXT NOT NULL,
    identity_type TEXT,
    identity_hash TEXT,
    token_hash TEXT NOT NULL,
    code_hash TEXT,
    code_expires_at INTEGER,
    code_attempts INTEGER NOT NULL,
    details TEXT NOT NULL,
    language TEXT NOT NULL,
    received_at TEXT NOT NULL,
    due_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    gateway_done_at TEXT,
    reason TEXT NOT NULL,
    result TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rights_requests_site ON rights_requests (site, received_at);
CREATE INDEX IF NOT EXISTS rights_requests_identity
    ON rights_requests (site, identity_hash, received_at);
{rights_chain.SQLITE_TABLE}
CREATE TABLE IF NOT EXISTS rights_systems (
    request_id TEXT NOT NULL,
    system TEXT NOT NULL,
    required INTEGER NOT NULL,
    state TEXT NOT NULL,
    note TEXT NOT NULL,
    confirmed_at TEXT,
    reminded_at TEXT,
    reminders INTEGER NOT NULL,
    PRIMARY KEY (request_id, system)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rights_events (
    seq INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS rights_events_pending ON rights_events (seq) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS erasure_tombstones (
    site TEXT NOT NULL,
    record_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    erased_fields TEXT NOT NULL,
    erased_at TEXT NOT NULL,
    request_id TEXT NOT NULL,
    PRIMARY KEY (site, record_id)
) WITHOUT ROWID;
"""


def _request(row: Sequence[Any]) -> StoredRequest:
    return request_from(dict(zip(COLUMNS, row, strict=True)))


def _add_events(
    conn: sqlite3.Connection, request_id: str, at: str, events: Sequence[tuple[str, Any]]
) -> None:
    conn.executemany(
        "INSERT INTO rights_events (request_id, type, body, created_at) VALUES (?, ?, ?, ?)",
        [(request_id, t, orjson.dumps(b).decode(), at) for t, b in events],
    )


class SqliteRights(SqliteOwned):
    """Each call runs in a worker thread, one at a time, on a connection of its own."""

    name = "sqlite"
    what = "the rights store"
    thread_name = "sqlite-rights"

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self.path, secure_delete=True)
        # The chain's tables first (the records' store makes them too, whichever opens first).
        create_tables(conn, sqlite_audit.SCHEMA + ";" + _SCHEMA)
        rights_chain.migrate_sqlite(conn)
        return conn

    async def create(
        self,
        request: StoredRequest,
        transition: Transition,
        systems: Sequence[SystemPart],
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> None:
        row = tuple(column_value(n, getattr(request, n)) for n in COLUMNS)
        parts = [
            (s.request_id, s.system, int(s.required), s.state, s.note, None, None, 0)
            for s in systems
        ]

        def run(conn: sqlite3.Connection) -> None:
            marks = ", ".join("?" * len(COLUMNS))
            conn.execute(f"INSERT INTO rights_requests VALUES ({marks})", row)
            rights_chain.add_sqlite(conn, request.site, transition)
            conn.executemany("INSERT INTO rights_systems VALUES (?,?,?,?,?,?,?,?)", parts)
            _add_events(conn, request.request_id, transition.at, events)

        await self._call(transaction_of(run))

    async def get(self, request_id: str) -> StoredRequest | None:
        def run(conn: sqlite3.Connection) -> StoredRequest | None:
            row = conn.execute(
                "SELECT * FROM rights_requests WHERE request_id = ?", (request_id,)
            ).fetchone()
            return None if row is None else _request(row)

        return await self._call(run)

    async def update(
        self,
        request_id: str,
        expect_state: str,
        changes: Mapping[str, Any],
        transition: Transition | None,
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> bool:
        names = [n for n in changes if n in COLUMNS and n != "request_id"]
        sets = ", ".join(f"{n} = ?" for n in names)
        values = [column_value(n, changes[n]) for n in names]

        def run(conn: sqlite3.Connection) -> bool:
            found = conn.execute(
                f"UPDATE rights_requests SET {sets} WHERE request_id = ? AND state = ? "
                "RETURNING site",
                (*values, request_id, expect_state),
            ).fetchone()
            if found is None:
                return False
            if transition is not None:
                rights_chain.add_sqlite(conn, found[0], transition)
            at = transition.at if transition else str(changes.get("updated_at", ""))
            _add_events(conn, request_id, at, events)
            return True

        return await self._call(transaction_of(run))

    async def count_attempt(self, request_id: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "UPDATE rights_requests SET code_attempts = code_attempts + 1 "
                "WHERE request_id = ? RETURNING code_attempts",
                (request_id,),
            ).fetchone()
            return int(row[0]) if row else 0

        return await self._call(run)

    async def recent_by_identity(self, site: str, identity_hash: str, since: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT count(*) FROM rights_requests "
                "WHERE site = ? AND identity_hash = ? AND received_at >= ?",
                (site, identity_hash, since),
            ).fetchone()
            return int(row[0])

        return await self._call(run)

    async def listing(
        self,
        site: str | None,
        type_: str | None,
        states: Sequence[str] | None,
        overdue_at: str | None,
        limit: int,
    ) -> list[StoredRequest]:
        clauses, params = ["1 = 1"], []
        if site is not None:
            clauses.append("site = ?")
            params.append(site)
        if type_ is not None:
            clauses.append("type = ?")
            params.append(type_)
        if states:
            clauses.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        if overdue_at is not None:
            clauses.append(f"state IN ({', '.join('?' * len(OPEN_STATES))}) AND due_at < ?")
            params.extend([*OPEN_STATES, overdue_at])

        def run(conn: sqlite3.Connection) -> list[StoredRequest]:
            rows = conn.execute(
                f"SELECT * FROM rights_requests WHERE {' AND '.join(clauses)} "
                "ORDER BY received_at DESC, request_id LIMIT ?",
                (*params, limit),
            )
            return [_request(r) for r in rows]

        return await self._call(run)

    async def transitions(self, request_id: str) -> list[Transition]:
        def run(conn: sqlite3.Connection) -> list[Transition]:
            rows = conn.execute(
                "SELECT request_id, from_state, to_state, actor, coalesce(reason, ''), at "
                "FROM rights_transitions WHERE request_id = ? ORDER BY seq",
                (request_id,),
            )
            return [Transition(*r) for r in rows]

        return await self._call(run)

    async def systems(self, request_id: str) -> list[SystemPart]:
        def run(conn: sqlite3.Connection) -> list[SystemPart]:
            rows = conn.execute(
                "SELECT * FROM rights_systems WHERE request_id = ? ORDER BY system",
                (request_id,),
            )
            return [SystemPart(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]

        return await self._call(run)

    async def confirm_system(
        self,
        request_id: str,
        system: str,
        state: str,
        note: str,
        at: str,
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE rights_systems SET state = ?, note = ?, confirmed_at = ? "
                "WHERE request_id = ? AND system = ? AND state = 'pending'",
                (state, note, at, request_id, system),
            )
            if cursor.rowcount != 1:
                return False
            _add_events(conn, request_id, at, events)
            return True

        return await self._call(transaction_of(run))

    async def remind_system(
        self,
        request_id: str,
        system: str,
        at: str,
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE rights_systems SET reminded_at = ?, reminders = reminders + 1 "
                "WHERE request_id = ? AND system = ?",
                (at, request_id, system),
            )
            _add_events(conn, request_id, at, events)

        await self._call(transaction_of(run))

    async def pending_events(self, limit: int) -> list[Event]:
        def run(conn: sqlite3.Connection) -> list[Event]:
            rows = conn.execute(
                "SELECT seq, request_id, type, body, created_at FROM rights_events "
                "WHERE delivered_at IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            )
            return [Event(r[0], r[1], r[2], orjson.loads(r[3]), r[4]) for r in rows]

        return await self._call(run)

    async def delivered(self, seqs: Sequence[int], at: str) -> None:
        rows = [(at, s) for s in seqs]
        await self._call(
            lambda c: c.executemany("UPDATE rights_events SET delivered_at = ? WHERE seq = ?", rows)
        )

    async def erase(
        self, site: str, subject_ids: Sequence[str], request_id: str, at: str
    ) -> Erasure:
        return await self._call(erasure_sqlite.erase, site, subject_ids, request_id, at)

    async def relink(
        self,
        site: str,
        subject_ids: Sequence[str],
        unlink: Sequence[str],
        link: Sequence[tuple[str, str]],
        at: str,
    ) -> None:
        await self._call(erasure_sqlite.relink, Relink(site, subject_ids, unlink, link, at))

    async def tombstones(self, site: str, subject_id: str) -> list[dict[str, Any]]:
        return await self._call(erasure_sqlite.tombstones, site, subject_id)

    async def erase_reasons(self, request_ids: Sequence[str]) -> int:
        return await self._call(rights_chain.erase_reasons_sqlite, request_ids)
