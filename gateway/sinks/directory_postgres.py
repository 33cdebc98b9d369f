"""The directory in PostgreSQL: its own tables and schema version beside the record tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson

from gateway.sinks import pg_common
from gateway.sinks.directory import (
    MAX_SUBJECTS_PER_IDENTITY,
    ContactRow,
    Link,
    PreferenceState,
    StoredKey,
)
from gateway.sinks.pg_common import PgPooled, rfc3339

_MIGRATION_LOCK = 0x63676469  # its own advisory lock: independent of the record tables'

# Site and subject ids in byte order ("C"), as in the record tables: collation costs
# microseconds per comparison and buys nothing for ids.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE deployment_secrets (
        name text PRIMARY KEY,
        value text NOT NULL
    );
    CREATE TABLE used_tokens (
        nonce text COLLATE "C" PRIMARY KEY,
        expires_at bigint NOT NULL
    );
    CREATE INDEX used_tokens_expiry ON used_tokens (expires_at);
    CREATE TABLE api_keys (
        key_id text COLLATE "C" PRIMARY KEY,
        site text COLLATE "C" NOT NULL,
        name text NOT NULL,
        scopes text[] NOT NULL,
        secret_hash text NOT NULL,
        created_at timestamptz NOT NULL,
        revoked_at timestamptz
    );
    CREATE TABLE identity_links (
        site text COLLATE "C" NOT NULL,
        identity_hash text COLLATE "C" NOT NULL,
        subject_id text COLLATE "C" NOT NULL,
        identity_type text NOT NULL,
        linked_at timestamptz NOT NULL,
        source text NOT NULL,
        PRIMARY KEY (site, identity_hash, subject_id)
    );
    CREATE INDEX identity_links_subject ON identity_links (site, subject_id);
    CREATE TABLE preference_state (
        site text COLLATE "C" NOT NULL,
        subject_id text COLLATE "C" NOT NULL,
        product_line text COLLATE "C" NOT NULL,
        preferences jsonb NOT NULL,
        record_id text NOT NULL,
        updated_at timestamptz NOT NULL,
        extra jsonb NOT NULL,
        PRIMARY KEY (site, subject_id, product_line)
    );
    """,
    # Version 2: the latest state as rows marketing can segment on (README, "Segments").
    """
    CREATE VIEW contact_permissions AS
    SELECT s.site, s.subject_id, s.product_line, c.key AS channel, t.key AS topic,
           t.value->>'frequency' AS frequency, s.updated_at
    FROM preference_state s
    CROSS JOIN LATERAL jsonb_each(s.preferences->'channels') AS c
    CROSS JOIN LATERAL jsonb_each(s.preferences->'topics') AS t
    WHERE c.value = 'true'::jsonb
      AND t.value->'enabled' = 'true'::jsonb
      AND coalesce(t.value->'channels'->c.key, 'true'::jsonb) <> 'false'::jsonb;
    CREATE VIEW contact_permission_identities AS
    SELECT p.*, l.identity_type, l.identity_hash
    FROM contact_permissions p
    JOIN identity_links l ON l.site = p.site AND l.subject_id = p.subject_id;
    """,
)

_UPSERT = """
INSERT INTO preference_state
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[],
                     $6::timestamptz[], $7::jsonb[])
ON CONFLICT (site, subject_id, product_line) DO UPDATE SET
    preferences = excluded.preferences, record_id = excluded.record_id,
    updated_at = excluded.updated_at, extra = excluded.extra
WHERE (excluded.updated_at, excluded.record_id)
    > (preference_state.updated_at, preference_state.record_id)
"""

_FORGET_TOKENS = """
DELETE FROM used_tokens WHERE nonce IN
    (SELECT nonce FROM used_tokens WHERE expires_at <= $1 ORDER BY expires_at LIMIT 100)
"""

# One index probe per asked hash (unnest, not "= ANY": with a long array the planner scans
# the whole table instead; measured on 200k links, 88 ms against 12 per 1,000 hashes). The
# time comes formatted as the other stores' (strftime per row in Python cost more than the
# rest of a row's decision).
_CONTACT = """
SELECT l.identity_hash, l.subject_id, s.product_line, s.preferences, s.record_id,
       to_char(s.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
FROM unnest($2::text[]) AS h(identity_hash)
JOIN identity_links l ON l.site = $1 AND l.identity_hash = h.identity_hash
LEFT JOIN preference_state s ON s.site = l.site AND s.subject_id = l.subject_id
    AND s.product_line IN ('', $3)
"""


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _text(value: datetime | None) -> str | None:
    return None if value is None else rfc3339(value)


_LINK = "INSERT INTO identity_links VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"


def _link_row(k: Link) -> tuple[Any, ...]:
    return (k.site, k.identity_hash, k.subject_id, k.identity_type, _time(k.linked_at), k.source)


def _key(row: Any) -> StoredKey:
    return StoredKey(
        row["key_id"],
        row["site"],
        row["name"],
        tuple(row["scopes"]),
        row["secret_hash"],
        _text(row["created_at"]) or "",
        _text(row["revoked_at"]),
    )


def _state(site: str, subject: str, row: Any) -> PreferenceState:
    return PreferenceState(
        site,
        subject,
        row["product_line"],
        orjson.loads(row["preferences"]),
        row["record_id"],
        _text(row["updated_at"]) or "",
        orjson.loads(row["extra"]),
    )


migrate = pg_common.migrator(
    lock=_MIGRATION_LOCK, table="directory_schema_version", migrations=MIGRATIONS, what="directory"
)


class PostgresDirectory(PgPooled):
    """A small pool of its own: these reads must not queue behind the forwarder's COPYs."""

    name = "postgres"
    what = "PostgreSQL directory"
    command_timeout = 30.0

    def migrations(self) -> Sequence[pg_common.Migrate]:
        return (migrate,)

    async def deployment_secret(self, name: str, make: Callable[[], str]) -> str:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO deployment_secrets VALUES ($1, $2) ON CONFLICT DO NOTHING",
                name,
                make(),
            )
            value: str = await conn.fetchval(
                "SELECT value FROM deployment_secrets WHERE name = $1", name
            )
        return value

    async def link_once(self, nonce: str, expires_at: int, now: int, links: Sequence[Link]) -> bool:
        async with self._transaction() as conn:
            await conn.execute(_FORGET_TOKENS, now)
            status = await conn.execute(
                "INSERT INTO used_tokens VALUES ($1, $2) ON CONFLICT DO NOTHING",
                nonce,
                expires_at,
            )
            fresh = status == "INSERT 0 1"
            if fresh:
                await conn.executemany(_LINK, [_link_row(k) for k in links])
        return bool(fresh)

    async def add_key(self, key: StoredKey) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO api_keys VALUES ($1, $2, $3, $4, $5, $6, $7)",
                key.key_id,
                key.site,
                key.name,
                list(key.scopes),
                key.secret_hash,
                _time(key.created_at),
                None if key.revoked_at is None else _time(key.revoked_at),
            )

    async def get_key(self, key_id: str) -> StoredKey | None:
        async with self._conn() as conn:
            row = await conn.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key_id)
        return None if row is None else _key(row)

    async def list_keys(self, site: str | None) -> list[StoredKey]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT * FROM api_keys WHERE $1::text IS NULL OR site = $1 "
                "ORDER BY site, created_at",
                site,
            )
        return [_key(r) for r in rows]

    async def revoke_key(self, key_id: str, at: str) -> bool:
        async with self._conn() as conn:
            status = await conn.execute(
                "UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL",
                key_id,
                _time(at),
            )
        return bool(status == "UPDATE 1")

    async def link(self, links: Sequence[Link]) -> None:
        async with self._transaction() as conn:
            await conn.executemany(_LINK, [_link_row(k) for k in links])

    async def subjects_for(self, site: str, identity_hash: str) -> list[str]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT subject_id FROM identity_links WHERE site = $1 AND identity_hash = $2 "
                "ORDER BY linked_at DESC, subject_id LIMIT $3",
                site,
                identity_hash,
                MAX_SUBJECTS_PER_IDENTITY,
            )
        return [r["subject_id"] for r in rows]

    async def identity_types(self, site: str, subject_id: str) -> list[str]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT identity_type FROM identity_links "
                "WHERE site = $1 AND subject_id = $2 ORDER BY identity_type",
                site,
                subject_id,
            )
        return [r["identity_type"] for r in rows]

    async def identities_of(
        self, site: str, subject_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, str]]]:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT l.subject_id, l.identity_type, l.identity_hash "
                "FROM unnest($2::text[]) AS s(subject_id) "
                "JOIN identity_links l ON l.site = $1 AND l.subject_id = s.subject_id "
                "ORDER BY 1, 2, 3",
                site,
                list(dict.fromkeys(subject_ids)),
            )
        out: dict[str, list[tuple[str, str]]] = {}
        for subject, type_, digest in rows:
            out.setdefault(subject, []).append((type_, digest))
        return out

    async def stamps_of(
        self, site: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, str]]:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT s.subject_id, s.product_line, s.extra->'stamps' FROM preference_state s "
                "JOIN unnest($2::text[], $3::text[]) AS k(u, l) "
                "ON s.site = $1 AND s.subject_id = k.u AND s.product_line = k.l",
                site,
                [k[0] for k in keys],
                [k[1] for k in keys],
            )
        return {(r[0], r[1]): orjson.loads(r[2]) for r in rows if r[2] is not None}

    async def write_preferences(self, states: Sequence[PreferenceState]) -> None:
        columns: list[list[Any]] = [[], [], [], [], [], [], []]
        for s in states:
            for column, value in zip(
                columns,
                (
                    s.site,
                    s.subject_id,
                    s.product_line,
                    orjson.dumps(s.preferences).decode(),
                    s.record_id,
                    _time(s.updated_at),
                    orjson.dumps(s.extra).decode(),
                ),
                strict=True,
            ):
                column.append(value)
        async with self._conn() as conn:
            await conn.execute(_UPSERT, *columns)

    async def preferences_of(self, site: str, subject_id: str) -> list[PreferenceState]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT * FROM preference_state WHERE site = $1 AND subject_id = $2 "
                "ORDER BY product_line",
                site,
                subject_id,
            )
        return [_state(site, subject_id, r) for r in rows]

    async def contact_rows(
        self, site: str, identity_hashes: Sequence[str], product_line: str
    ) -> list[ContactRow]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                _CONTACT, site, list(dict.fromkeys(identity_hashes)), product_line
            )
        return [
            ContactRow(
                r[0],
                r[1],
                r[2],
                None if r[3] is None else orjson.loads(r[3]),
                r[5],
                r[4],
            )
            for r in rows
        ]
