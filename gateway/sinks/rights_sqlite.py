"""The rights tables in the embedded SQLite store, and erasure across its tables."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from gateway.core.model import ConsentRecord
from gateway.sinks.directory_sqlite import SqliteDirectory
from gateway.sinks.rights import (
    ERASED_FIELDS,
    PREFERENCE_ERASED_FIELDS,
    Erasure,
    Event,
    StoredRequest,
    SystemPart,
    Transition,
)
from gateway.sinks.sqlite import SqliteStore

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS rights_transitions (
    request_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (request_id, seq)
) WITHOUT ROWID;
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

_COLUMNS = tuple(f.name for f in fields(StoredRequest))
_JSON = {"region", "subject_ids", "details", "result"}
_OPEN = ("received", "verifying", "in_progress", "extended")


def content_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON: what its receipt signs (recording/receipts.py)."""
    record = ConsentRecord.from_json(body)
    return hashlib.sha256(
        orjson.dumps(record.plain_json(), option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


def _value(name: str, value: Any) -> Any:
    if name in _JSON:
        return orjson.dumps(list(value) if name == "subject_ids" else value).decode()
    return value


def _request(row: Sequence[Any]) -> StoredRequest:
    data = dict(zip(_COLUMNS, row, strict=True))
    for name in _JSON:
        data[name] = orjson.loads(data[name])
    data["subject_ids"] = tuple(data["subject_ids"])
    return StoredRequest(**data)


def _add_events(
    conn: sqlite3.Connection, request_id: str, at: str, events: Sequence[tuple[str, Any]]
) -> None:
    conn.executemany(
        "INSERT INTO rights_events (request_id, type, body, created_at) VALUES (?, ?, ?, ?)",
        [(request_id, t, orjson.dumps(b).decode(), at) for t, b in events],
    )


def _add_transition(conn: sqlite3.Connection, t: Transition) -> None:
    conn.execute(
        "INSERT INTO rights_transitions SELECT ?, coalesce(max(seq), 0) + 1, ?, ?, ?, ?, ? "
        "FROM rights_transitions WHERE request_id = ?",
        (t.request_id, t.from_state, t.to_state, t.actor, t.reason, t.at, t.request_id),
    )


def _transaction(conn: sqlite3.Connection, fn: Callable[[], Any]) -> Any:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return result


class SqliteRights:
    """Each call runs in a worker thread, one at a time, on a connection of its own."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self._conn = await asyncio.to_thread(self._connect)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        # Erased values are overwritten with zeros in the database file, not left in free pages.
        conn.execute("PRAGMA secure_delete = ON")
        conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        return conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            async with self._lock:
                await asyncio.to_thread(conn.close)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._conn is None:
            raise RuntimeError("the rights store is not open")
        async with self._lock:
            return await asyncio.to_thread(fn, self._conn, *args)

    async def create(
        self,
        request: StoredRequest,
        transition: Transition,
        systems: Sequence[SystemPart],
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> None:
        row = tuple(_value(n, getattr(request, n)) for n in _COLUMNS)
        parts = [
            (s.request_id, s.system, int(s.required), s.state, s.note, None, None, 0)
            for s in systems
        ]

        def run(conn: sqlite3.Connection) -> None:
            def body() -> None:
                marks = ", ".join("?" * len(_COLUMNS))
                conn.execute(f"INSERT INTO rights_requests VALUES ({marks})", row)
                _add_transition(conn, transition)
                conn.executemany("INSERT INTO rights_systems VALUES (?,?,?,?,?,?,?,?)", parts)
                _add_events(conn, request.request_id, transition.at, events)

            _transaction(conn, body)

        await self._call(run)

    async def get(self, request_id: str) -> StoredRequest | None:
        def run(conn: sqlite3.Connection) -> StoredRequest | None:
            row = conn.execute(
                "SELECT * FROM rights_requests WHERE request_id = ?", (request_id,)
            ).fetchone()
            return None if row is None else _request(row)

        result: StoredRequest | None = await self._call(run)
        return result

    async def update(
        self,
        request_id: str,
        expect_state: str,
        changes: Mapping[str, Any],
        transition: Transition | None,
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> bool:
        names = [n for n in changes if n in _COLUMNS and n != "request_id"]
        sets = ", ".join(f"{n} = ?" for n in names)
        values = [_value(n, changes[n]) for n in names]

        def run(conn: sqlite3.Connection) -> bool:
            def body() -> bool:
                cursor = conn.execute(
                    f"UPDATE rights_requests SET {sets} WHERE request_id = ? AND state = ?",
                    (*values, request_id, expect_state),
                )
                if cursor.rowcount != 1:
                    return False
                if transition is not None:
                    _add_transition(conn, transition)
                at = transition.at if transition else str(changes.get("updated_at", ""))
                _add_events(conn, request_id, at, events)
                return True

            return bool(_transaction(conn, body))

        result: bool = await self._call(run)
        return result

    async def count_attempt(self, request_id: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "UPDATE rights_requests SET code_attempts = code_attempts + 1 "
                "WHERE request_id = ? RETURNING code_attempts",
                (request_id,),
            ).fetchone()
            return int(row[0]) if row else 0

        result: int = await self._call(run)
        return result

    async def recent_by_identity(self, site: str, identity_hash: str, since: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT count(*) FROM rights_requests "
                "WHERE site = ? AND identity_hash = ? AND received_at >= ?",
                (site, identity_hash, since),
            ).fetchone()
            return int(row[0])

        result: int = await self._call(run)
        return result

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
            clauses.append(f"state IN ({', '.join('?' * len(_OPEN))}) AND due_at < ?")
            params.extend([*_OPEN, overdue_at])

        def run(conn: sqlite3.Connection) -> list[StoredRequest]:
            rows = conn.execute(
                f"SELECT * FROM rights_requests WHERE {' AND '.join(clauses)} "
                "ORDER BY received_at DESC, request_id LIMIT ?",
                (*params, limit),
            )
            return [_request(r) for r in rows]

        result: list[StoredRequest] = await self._call(run)
        return result

    async def transitions(self, request_id: str) -> list[Transition]:
        def run(conn: sqlite3.Connection) -> list[Transition]:
            rows = conn.execute(
                "SELECT request_id, from_state, to_state, actor, reason, at "
                "FROM rights_transitions WHERE request_id = ? ORDER BY seq",
                (request_id,),
            )
            return [Transition(*r) for r in rows]

        result: list[Transition] = await self._call(run)
        return result

    async def systems(self, request_id: str) -> list[SystemPart]:
        def run(conn: sqlite3.Connection) -> list[SystemPart]:
            rows = conn.execute(
                "SELECT * FROM rights_systems WHERE request_id = ? ORDER BY system",
                (request_id,),
            )
            return [SystemPart(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]

        result: list[SystemPart] = await self._call(run)
        return result

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
            def body() -> bool:
                cursor = conn.execute(
                    "UPDATE rights_systems SET state = ?, note = ?, confirmed_at = ? "
                    "WHERE request_id = ? AND system = ? AND state = 'pending'",
                    (state, note, at, request_id, system),
                )
                if cursor.rowcount != 1:
                    return False
                _add_events(conn, request_id, at, events)
                return True

            return bool(_transaction(conn, body))

        result: bool = await self._call(run)
        return result

    async def remind_system(
        self,
        request_id: str,
        system: str,
        at: str,
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            def body() -> None:
                conn.execute(
                    "UPDATE rights_systems SET reminded_at = ?, reminders = reminders + 1 "
                    "WHERE request_id = ? AND system = ?",
                    (at, request_id, system),
                )
                _add_events(conn, request_id, at, events)

            _transaction(conn, body)

        await self._call(run)

    async def pending_events(self, limit: int) -> list[Event]:
        def run(conn: sqlite3.Connection) -> list[Event]:
            rows = conn.execute(
                "SELECT seq, request_id, type, body, created_at FROM rights_events "
                "WHERE delivered_at IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            )
            return [Event(r[0], r[1], r[2], orjson.loads(r[3]), r[4]) for r in rows]

        result: list[Event] = await self._call(run)
        return result

    async def delivered(self, seqs: Sequence[int], at: str) -> None:
        rows = [(at, s) for s in seqs]
        await self._call(
            lambda c: c.executemany("UPDATE rights_events SET delivered_at = ? WHERE seq = ?", rows)
        )

    async def erase(
        self, site: str, subject_ids: Sequence[str], request_id: str, at: str
    ) -> Erasure:
        erased = orjson.dumps(sorted(ERASED_FIELDS)).decode()

        def run(conn: sqlite3.Connection) -> Erasure:
            def body() -> Erasure:
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
                    # The links' history and the request facts of preference changes go too.
                    conn.execute(
                        "DELETE FROM identity_link_records WHERE site = ? AND subject_id = ?",
                        (site, subject),
                    )
                    for seq, text in conn.execute(
                        "SELECT seq, body FROM preference_records "
                        "WHERE site = ? AND subject_id = ?",
                        (site, subject),
                    ).fetchall():
                        data = orjson.loads(text)
                        data.update(PREFERENCE_ERASED_FIELDS)
                        conn.execute(
                            "UPDATE preference_records SET body = ? WHERE seq = ?",
                            (orjson.dumps(data).decode(), seq),
                        )
                    states += conn.execute(
                        "UPDATE preference_state SET extra = '{}' "
                        "WHERE site = ? AND subject_id = ? AND extra != '{}'",
                        (site, subject),
                    ).rowcount
                return Erasure(records, links, states)

            result: Erasure = _transaction(conn, body)
            # Erased values must not survive in freed pages or the WAL: overwrite them now.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return result

        result: Erasure = await self._call(run)
        return result

    async def relink(
        self,
        site: str,
        subject_ids: Sequence[str],
        unlink: Sequence[str],
        link: Sequence[tuple[str, str]],
        at: str,
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            def body() -> None:
                for subject in subject_ids:
                    conn.executemany(
                        "DELETE FROM identity_links "
                        "WHERE site = ? AND subject_id = ? AND identity_hash = ?",
                        [(site, subject, h) for h in unlink],
                    )
                    conn.executemany(
                        "INSERT OR IGNORE INTO identity_links VALUES (?, ?, ?, ?, ?, 'rights')",
                        [(site, h, subject, t, at) for t, h in link],
                    )

            _transaction(conn, body)

        await self._call(run)

    async def tombstones(self, site: str, subject_id: str) -> list[dict[str, Any]]:
        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT record_id, content_hash, erased_fields, erased_at, request_id "
                "FROM erasure_tombstones WHERE site = ? AND subject_id = ? ORDER BY record_id",
                (site, subject_id),
            )
            return [
                {
                    "record_id": r[0],
                    "content_hash": r[1],
                    "erased_fields": orjson.loads(r[2]),
                    "erased_at": r[3],
                    "request_id": r[4],
                }
                for r in rows
            ]

        result: list[dict[str, Any]] = await self._call(run)
        return result


async def ensure_tables(path: Path) -> None:
    """Create the record and directory tables erasure reaches, if no service has yet."""
    for owner in (SqliteStore(path), SqliteDirectory(path)):
        await owner.open()
        await owner.close()
