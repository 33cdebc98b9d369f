"""The rights tables in PostgreSQL (erasure across the record and directory tables:
erasure_postgres)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from gateway.sinks import directory_postgres, erasure_postgres, pg_common, postgres, rights_chain
from gateway.sinks.pg_common import PgPooled
from gateway.sinks.rights import (
    COLUMNS,
    JSON_COLUMNS,
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

_MIGRATION_LOCK = 0x63677269  # its own advisory lock

# Times are fixed-width RFC 3339 text, as in the SQLite store: the service compares them.
MIGRATIONS: tuple[pg_common.Step, ...] = (
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
    # Version 2: transitions hash-chained per site, old ones linked now (rights_chain.py).
    rights_chain.migrate_pg,
)


async def _add_events(
    conn: asyncpg.Connection, request_id: str, at: str, events: Sequence[tuple[str, Any]]
) -> None:
    if events:
        await conn.executemany(
            "INSERT INTO rights_events (request_id, type, body, created_at) "
            "VALUES ($1, $2, $3::jsonb, $4)",
            [(request_id, t, orjson.dumps(b).decode(), at) for t, b in events],
        )


migrate = pg_common.migrator(
    lock=_MIGRATION_LOCK, table="rights_schema_version", migrations=MIGRATIONS, what="rights"
)


class PostgresRights(PgPooled):
    """A small pool of its own; migrates the record and directory tables too (erasure and
    correction reach them), each under its own lock, so any start order works."""

    name = "postgres"
    what = "PostgreSQL rights store"

    def migrations(self) -> Sequence[pg_common.Migrate]:
        return (postgres.migrate, directory_postgres.migrate, migrate)

    async def create(
        self,
        request: StoredRequest,
        transition: Transition,
        systems: Sequence[SystemPart],
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> None:
        marks = ", ".join(
            f"${i + 1}::jsonb" if n in JSON_COLUMNS else f"${i + 1}" for i, n in enumerate(COLUMNS)
        )
        async with self._transaction() as conn:
            await conn.execute(
                f"INSERT INTO rights_requests ({', '.join(COLUMNS)}) VALUES ({marks})",
                *(column_value(n, getattr(request, n)) for n in COLUMNS),
            )
            await rights_chain.add_pg(conn, request.site, transition)
            if systems:
                await conn.executemany(
                    "INSERT INTO rights_systems VALUES ($1, $2, $3, $4, $5, NULL, NULL, 0)",
                    [(s.request_id, s.system, s.required, s.state, s.note) for s in systems],
                )
            await _add_events(conn, request.request_id, transition.at, events)

    async def get(self, request_id: str) -> StoredRequest | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM rights_requests WHERE request_id = $1", request_id
            )
        return None if row is None else request_from(row)

    async def update(
        self,
        request_id: str,
        expect_state: str,
        changes: Mapping[str, Any],
        transition: Transition | None,
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> bool:
        names = [n for n in changes if n in COLUMNS and n != "request_id"]
        sets = ", ".join(
            f"{n} = ${i + 3}::jsonb" if n in JSON_COLUMNS else f"{n} = ${i + 3}"
            for i, n in enumerate(names)
        )
        async with self._transaction() as conn:
            site = await conn.fetchval(
                f"UPDATE rights_requests SET {sets} WHERE request_id = $1 AND state = $2 "
                "RETURNING site",
                request_id, expect_state, *(column_value(n, changes[n]) for n in names),
            )  # fmt: skip
            if site is None:
                return False
            if transition is not None:
                await rights_chain.add_pg(conn, site, transition)
            at = transition.at if transition else str(changes.get("updated_at", ""))
            await _add_events(conn, request_id, at, events)
        return True

    async def count_attempt(self, request_id: str) -> int:
        async with self._conn() as conn:
            value = await conn.fetchval(
                "UPDATE rights_requests SET code_attempts = code_attempts + 1 "
                "WHERE request_id = $1 RETURNING code_attempts",
                request_id,
            )
        return int(value or 0)

    async def recent_by_identity(self, site: str, identity_hash: str, since: str) -> int:
        async with self._conn() as conn:
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
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT * FROM rights_requests WHERE ($1::text IS NULL OR site = $1) "
                "AND ($2::text IS NULL OR type = $2) "
                "AND ($3::text[] IS NULL OR state = ANY($3)) "
                "AND ($4::text IS NULL OR (state = ANY($5) AND due_at < $4)) "
                "ORDER BY received_at DESC, request_id LIMIT $6",
                site, type_, list(states) if states else None, overdue_at, OPEN_STATES, limit,
            )  # fmt: skip
        return [request_from(r) for r in rows]

    async def transitions(self, request_id: str) -> list[Transition]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT request_id, from_state, to_state, actor, coalesce(reason, ''), at "
                "FROM rights_transitions WHERE request_id = $1 ORDER BY seq",
                request_id,
            )
        return [Transition(*r) for r in rows]

    async def systems(self, request_id: str) -> list[SystemPart]:
        async with self._conn() as conn:
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
        async with self._transaction() as conn:
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
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE rights_systems SET reminded_at = $1, reminders = reminders + 1 "
                "WHERE request_id = $2 AND system = $3",
                at, request_id, system,
            )  # fmt: skip
            await _add_events(conn, request_id, at, events)

    async def pending_events(self, limit: int) -> list[Event]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT seq, request_id, type, body, created_at FROM rights_events "
                "WHERE delivered_at IS NULL ORDER BY seq LIMIT $1",
                limit,
            )
        return [Event(r[0], r[1], r[2], orjson.loads(r[3]), r[4]) for r in rows]

    async def delivered(self, seqs: Sequence[int], at: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE rights_events SET delivered_at = $1 WHERE seq = ANY($2)", at, list(seqs)
            )

    async def erase(
        self, site: str, subject_ids: Sequence[str], request_id: str, at: str
    ) -> Erasure:
        async with self._transaction() as conn:
            return await erasure_postgres.erase(conn, site, subject_ids, request_id, at)

    async def relink(
        self,
        site: str,
        subject_ids: Sequence[str],
        unlink: Sequence[str],
        link: Sequence[tuple[str, str]],
        at: str,
    ) -> None:
        async with self._transaction() as conn:
            await erasure_postgres.relink(conn, Relink(site, subject_ids, unlink, link, at))

    async def tombstones(self, site: str, subject_id: str) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            return await erasure_postgres.tombstones(conn, site, subject_id)

    async def erase_reasons(self, request_ids: Sequence[str]) -> int:
        async with self._transaction() as conn:
            return await rights_chain.erase_reasons_pg(conn, request_ids)
