"""The rights tables in PostgreSQL, and erasure across the record and directory tables."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from gateway.sinks import directory_postgres, postgres
from gateway.sinks.rights import (
    ERASED_FIELDS,
    PREFERENCE_ERASED_FIELDS,
    Erasure,
    Event,
    StoredRequest,
    SystemPart,
    Transition,
)
from gateway.sinks.rights_sqlite import content_hash

log = logging.getLogger("gateway.sinks.rights")

_MIGRATION_LOCK = 0x63677269  # its own advisory lock

# Times are fixed-width RFC 3339 text, as in the SQLite store: the service compares them.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE rights_requests (
        request_id text COLLATE "C" PRIMARY KEY,
        site text COLLATE "C" NOT NULL,
        type text NOT NULL,
        state text NOT NULL,
        rule_id text NOT NULL,
        region jsonb NOT NULL,
        verification text NOT NULL,
        subject_ids jsonb NOT NULL,
        identity_type text,
        identity_hash text COLLATE "C",
        token_hash text NOT NULL,
        code_hash text,
        code_expires_at bigint,
        code_attempts integer NOT NULL,
        details jsonb NOT NULL,
        language text NOT NULL,
        received_at text COLLATE "C" NOT NULL,
        due_at text COLLATE "C" NOT NULL,
        updated_at text NOT NULL,
        gateway_done_at text,
        reason text NOT NULL,
        result jsonb NOT NULL
    );
    CREATE INDEX rights_requests_site ON rights_requests (site, received_at);
    CREATE INDEX rights_requests_identity ON rights_requests (site, identity_hash, received_at);
    CREATE TABLE rights_transitions (
        request_id text COLLATE "C" NOT NULL,
        seq integer NOT NULL,
        from_state text,
        to_state text NOT NULL,
        actor text NOT NULL,
        reason text NOT NULL,
        at text NOT NULL,
        PRIMARY KEY (request_id, seq)
    );
    CREATE TABLE rights_systems (
        request_id text COLLATE "C" NOT NULL,
        system text NOT NULL,
        required boolean NOT NULL,
        state text NOT NULL,
        note text NOT NULL,
        confirmed_at text,
        reminded_at text,
        reminders integer NOT NULL,
        PRIMARY KEY (request_id, system)
    );
    CREATE TABLE rights_events (
        seq bigserial PRIMARY KEY,
        request_id text NOT NULL,
        type text NOT NULL,
        body jsonb NOT NULL,
        created_at text NOT NULL,
        delivered_at text
    );
    CREATE INDEX rights_events_pending ON rights_events (seq) WHERE delivered_at IS NULL;
    CREATE TABLE erasure_tombstones (
        site text COLLATE "C" NOT NULL,
        record_id text NOT NULL,
        subject_id text COLLATE "C" NOT NULL,
        content_hash text NOT NULL,
        erased_fields jsonb NOT NULL,
        erased_at text NOT NULL,
        request_id text NOT NULL,
        PRIMARY KEY (site, record_id)
    );
    """,
)

_COLUMNS = tuple(f.name for f in fields(StoredRequest))
_JSON = {"region", "subject_ids", "details", "result"}
_OPEN = ["received", "verifying", "in_progress", "extended"]


def _value(name: str, value: Any) -> Any:
    if name in _JSON:
        return orjson.dumps(list(value) if name == "subject_ids" else value).decode()
    return value


def _request(row: Mapping[str, Any]) -> StoredRequest:
    data = {n: row[n] for n in _COLUMNS}
    for name in _JSON:
        data[name] = orjson.loads(data[name])
    data["subject_ids"] = tuple(data["subject_ids"])
    return StoredRequest(**data)


async def _add_events(
    conn: asyncpg.Connection, request_id: str, at: str, events: Sequence[tuple[str, Any]]
) -> None:
    if events:
        await conn.executemany(
            "INSERT INTO rights_events (request_id, type, body, created_at) "
            "VALUES ($1, $2, $3::jsonb, $4)",
            [(request_id, t, orjson.dumps(b).decode(), at) for t, b in events],
        )


async def _add_transition(conn: asyncpg.Connection, t: Transition) -> None:
    # The request's row is locked by the caller's insert or update: seq cannot race.
    await conn.execute(
        "INSERT INTO rights_transitions SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5, $6 "
        "FROM rights_transitions WHERE request_id = $1",
        t.request_id, t.from_state, t.to_state, t.actor, t.reason, t.at,
    )  # fmt: skip


async def migrate(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS rights_schema_version "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM rights_schema_version")
        for version in range(current + 1, len(MIGRATIONS) + 1):
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute("INSERT INTO rights_schema_version VALUES ($1)", version)
            log.info("rights schema migrated to version %d", version)


class PostgresRights:
    """A small pool of its own; migrates the record and directory tables too (erasure and
    correction reach them), each under its own lock, so any start order works."""

    name = "postgres"

    def __init__(self, dsn: str, *, pool_size: int = 2, connect_timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        try:
            await self._ensure()
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            log.warning("PostgreSQL rights store unreachable at start-up (%s); will retry", exc)

    async def _ensure(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
                try:
                    await postgres.migrate(conn)
                    await directory_postgres.migrate(conn)
                    await migrate(conn)
                finally:
                    await conn.close()
                self._pool = await asyncpg.create_pool(
                    self.dsn, min_size=1, max_size=self.pool_size,
                    timeout=self.connect_timeout, command_timeout=60,
                )  # fmt: skip
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def create(
        self,
        request: StoredRequest,
        transition: Transition,
        systems: Sequence[SystemPart],
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> None:
        pool = await self._ensure()
        marks = ", ".join(
            f"${i + 1}::jsonb" if n in _JSON else f"${i + 1}" for i, n in enumerate(_COLUMNS)
        )
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO rights_requests ({', '.join(_COLUMNS)}) VALUES ({marks})",
                *(_value(n, getattr(request, n)) for n in _COLUMNS),
            )
            await _add_transition(conn, transition)
            if systems:
                await conn.executemany(
                    "INSERT INTO rights_systems VALUES ($1, $2, $3, $4, $5, NULL, NULL, 0)",
                    [(s.request_id, s.system, s.required, s.state, s.note) for s in systems],
                )
            await _add_events(conn, request.request_id, transition.at, events)

    async def get(self, request_id: str) -> StoredRequest | None:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM rights_requests WHERE request_id = $1", request_id
            )
        return None if row is None else _request(row)

    async def update(
        self,
        request_id: str,
        expect_state: str,
        changes: Mapping[str, Any],
        transition: Transition | None,
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> bool:
        names = [n for n in changes if n in _COLUMNS and n != "request_id"]
        sets = ", ".join(
            f"{n} = ${i + 3}::jsonb" if n in _JSON else f"{n} = ${i + 3}"
            for i, n in enumerate(names)
        )
        pool = await self._ensure()
        async with pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                f"UPDATE rights_requests SET {sets} WHERE request_id = $1 AND state = $2",
                request_id, expect_state, *(_value(n, changes[n]) for n in names),
            )  # fmt: skip
            if status != "UPDATE 1":
                return False
            if transition is not None:
                await _add_transition(conn, transition)
            at = transition.at if transition else str(changes.get("updated_at", ""))
            await _add_events(conn, request_id, at, events)
        return True

    async def count_attempt(self, request_id: str) -> int:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            value = await conn.fetchval(
                "UPDATE rights_requests SET code_attempts = code_attempts + 1 "
                "WHERE request_id = $1 RETURNING code_attempts",
                request_id,
            )
        return int(value or 0)

    async def recent_by_identity(self, site: str, identity_hash: str, since: str) -> int:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            value = await conn.fetchval(
                "SELECT count(*) FROM rights_requests "
                "WHERE site = $1 AND identity_hash = $2 AND received_at >= $3",
                site, identity_hash, since,
            )  # fmt: skip
        return int(value)

    async def listing(
        self,
        site: str | None,
        type_: str | None,
        states: Sequence[str] | None,
        overdue_at: str | None,
        limit: int,
    ) -> list[StoredRequest]:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM rights_requests WHERE ($1::text IS NULL OR site = $1) "
                "AND ($2::text IS NULL OR type = $2) "
                "AND ($3::text[] IS NULL OR state = ANY($3)) "
                "AND ($4::text IS NULL OR (state = ANY($5) AND due_at < $4)) "
                "ORDER BY received_at DESC, request_id LIMIT $6",
                site, type_, list(states) if states else None, overdue_at, _OPEN, limit,
            )  # fmt: skip
        return [_request(r) for r in rows]

    async def transitions(self, request_id: str) -> list[Transition]:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT request_id, from_state, to_state, actor, reason, at "
                "FROM rights_transitions WHERE request_id = $1 ORDER BY seq",
                request_id,
            )
        return [Transition(*r) for r in rows]

    async def systems(self, request_id: str) -> list[SystemPart]:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM rights_systems WHERE request_id = $1 ORDER BY system", request_id
            )
        return [SystemPart(*r) for r in rows]

    async def confirm_system(
        self,
        request_id: str,
        system: str,
        state: str,
        note: str,
        at: str,
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> bool:
        pool = await self._ensure()
        async with pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE rights_systems SET state = $1, note = $2, confirmed_at = $3 "
                "WHERE request_id = $4 AND system = $5 AND state = 'pending'",
                state, note, at, request_id, system,
            )  # fmt: skip
            if status != "UPDATE 1":
                return False
            await _add_events(conn, request_id, at, events)
        return True

    async def remind_system(
        self,
        request_id: str,
        system: str,
        at: str,
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> None:
        pool = await self._ensure()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE rights_systems SET reminded_at = $1, reminders = reminders + 1 "
                "WHERE request_id = $2 AND system = $3",
                at, request_id, system,
            )  # fmt: skip
            await _add_events(conn, request_id, at, events)

    async def pending_events(self, limit: int) -> list[Event]:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT seq, request_id, type, body, created_at FROM rights_events "
                "WHERE delivered_at IS NULL ORDER BY seq LIMIT $1",
                limit,
            )
        return [Event(r[0], r[1], r[2], orjson.loads(r[3]), r[4]) for r in rows]

    async def delivered(self, seqs: Sequence[int], at: str) -> None:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE rights_events SET delivered_at = $1 WHERE seq = ANY($2)", at, list(seqs)
            )

    async def erase(
        self, site: str, subject_ids: Sequence[str], request_id: str, at: str
    ) -> Erasure:
        erased = orjson.dumps(sorted(ERASED_FIELDS)).decode()
        subjects = list(subject_ids)
        pool = await self._ensure()
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"SELECT {postgres._COLS} FROM consent_records "
                "WHERE site = $1 AND subject_id = ANY($2) FOR UPDATE",
                site, subjects,
            )  # fmt: skip
            tombs = []
            for row in rows:
                data = postgres._record_json(row)
                if all(data.get(k) == v for k, v in ERASED_FIELDS.items()):
                    continue
                tombs.append(
                    (site, data["record_id"], data["subject_id"], content_hash(data), erased, at,
                     request_id)
                )  # fmt: skip
            if tombs:
                await conn.executemany(
                    "INSERT INTO erasure_tombstones VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) "
                    "ON CONFLICT DO NOTHING",
                    tombs,
                )
                await conn.execute(
                    "UPDATE consent_records SET ip_truncated = NULL, user_agent = '', "
                    "page_url = '', idempotency_key = NULL "
                    "WHERE site = $1 AND record_id = ANY($2::uuid[])",
                    site, [t[1] for t in tombs],
                )  # fmt: skip
            links = await conn.execute(
                "DELETE FROM identity_links WHERE site = $1 AND subject_id = ANY($2)",
                site, subjects,
            )  # fmt: skip
            # The links' history goes too, and the request facts of preference changes
            # (a trigger keeps their chain verifiable, as for consents: postgres_audit.py).
            await conn.execute(
                "DELETE FROM identity_link_records WHERE site = $1 AND subject_id = ANY($2)",
                site, subjects,
            )  # fmt: skip
            blank = ", ".join(
                f"{name} = ${n}" for n, name in enumerate(PREFERENCE_ERASED_FIELDS, 3)
            )
            await conn.execute(
                f"UPDATE preference_records SET {blank} WHERE site = $1 "
                "AND subject_id = ANY($2) AND (ip_truncated IS NOT NULL OR user_agent <> '' "
                "OR idempotency_key IS NOT NULL)",
                site, subjects, *PREFERENCE_ERASED_FIELDS.values(),
            )  # fmt: skip
            states = await conn.execute(
                "UPDATE preference_state SET extra = '{}'::jsonb "
                "WHERE site = $1 AND subject_id = ANY($2) AND extra != '{}'::jsonb",
                site, subjects,
            )  # fmt: skip
        return Erasure(len(tombs), int(links.split()[-1]), int(states.split()[-1]))

    async def relink(
        self,
        site: str,
        subject_ids: Sequence[str],
        unlink: Sequence[str],
        link: Sequence[tuple[str, str]],
        at: str,
    ) -> None:
        pool = await self._ensure()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM identity_links WHERE site = $1 AND subject_id = ANY($2) "
                "AND identity_hash = ANY($3)",
                site, list(subject_ids), list(unlink),
            )  # fmt: skip
            rows = [(site, h, s, t, at) for s in subject_ids for t, h in link]
            if rows:
                await conn.executemany(
                    "INSERT INTO identity_links VALUES ($1, $2, $3, $4, $5::timestamptz, 'rights') "
                    "ON CONFLICT DO NOTHING",
                    [(a, b, c, d, datetime.fromisoformat(e)) for a, b, c, d, e in rows],
                )

    async def tombstones(self, site: str, subject_id: str) -> list[dict[str, Any]]:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT record_id, content_hash, erased_fields, erased_at, request_id "
                "FROM erasure_tombstones WHERE site = $1 AND subject_id = $2 ORDER BY record_id",
                site, subject_id,
            )  # fmt: skip
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
