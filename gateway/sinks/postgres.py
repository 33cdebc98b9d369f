"""The PostgreSQL central store: append-only records, latest state per subject, banner texts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

import asyncpg
import orjson

from gateway.model import ConsentRecord
from gateway.sinks.base import HISTORY_LIMIT, PermanentSinkError, SinkError

log = logging.getLogger("gateway.sinks.postgres")

SCHEMA_VERSION = 1
_MIGRATION_LOCK = 0x636F6E73  # any constant: serialises start-up migrations across nodes

COLUMNS = (
    "record_id", "recorded_at", "site", "subject_id", "banner_version", "consent_revision",
    "action", "choices", "channel", "language", "rule_id", "region_country",
    "region_subdivision", "region_source", "gpc", "ip_truncated", "user_agent", "origin",
    "page_url", "node_id", "idempotency_key", "withdraws", "signals",
)  # fmt: skip
_COLS = ", ".join(COLUMNS)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE consent_records (
        record_id uuid PRIMARY KEY,
        recorded_at timestamptz NOT NULL,
        site text NOT NULL,
        subject_id text NOT NULL,
        banner_version text NOT NULL,
        consent_revision text NOT NULL,
        action text NOT NULL,
        choices jsonb NOT NULL,
        channel text NOT NULL,
        language text NOT NULL,
        rule_id text NOT NULL,
        region_country text,
        region_subdivision text,
        region_source text NOT NULL,
        gpc boolean NOT NULL,
        ip_truncated text,
        user_agent text NOT NULL,
        origin text NOT NULL,
        page_url text NOT NULL,
        node_id text NOT NULL,
        idempotency_key text,
        withdraws uuid,
        signals jsonb NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX consent_records_subject
        ON consent_records (site, subject_id, recorded_at DESC, record_id DESC);
    CREATE TABLE consent_latest (
        site text NOT NULL,
        subject_id text NOT NULL,
        record_id uuid NOT NULL,
        recorded_at timestamptz NOT NULL,
        PRIMARY KEY (site, subject_id)
    );
    CREATE TABLE banner_versions (
        site text NOT NULL,
        banner_version text NOT NULL,
        consent_revision text NOT NULL,
        texts jsonb NOT NULL,
        published_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (site, banner_version)
    );
    """,
)

# One statement per batch, the batch being one JSON array parameter that PostgreSQL
# parses itself (measured: asyncpg's COPY or array encoding cost more Python time than
# the database spends); only newly inserted records can move a subject's latest state, and
# the newest wins by (recorded_at, record_id) whatever order the batches arrive in.
_WRITE = f"""
WITH inserted AS (
    INSERT INTO consent_records ({_COLS})
    SELECT {_COLS} FROM json_populate_recordset(NULL::consent_records, $1::json)
    ON CONFLICT (record_id) DO NOTHING
    RETURNING site, subject_id, record_id, recorded_at
)
INSERT INTO consent_latest (site, subject_id, record_id, recorded_at)
SELECT DISTINCT ON (site, subject_id) site, subject_id, record_id, recorded_at
FROM inserted ORDER BY site, subject_id, recorded_at DESC, record_id DESC
ON CONFLICT (site, subject_id) DO UPDATE
SET record_id = excluded.record_id, recorded_at = excluded.recorded_at
WHERE (excluded.recorded_at, excluded.record_id)
    > (consent_latest.recorded_at, consent_latest.record_id)
"""


# What PostgreSQL (or encoding a value for it) refuses for good, found row by row.
_REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, ValueError, TypeError)


def _row(r: ConsentRecord) -> str:
    """The record as JSON whose keys are the column names."""
    return orjson.dumps(r.as_json()).decode()


def _record_json(row: Mapping[str, Any]) -> dict[str, Any]:
    data = {name: row[name] for name in COLUMNS}
    data["record_id"] = str(row["record_id"])
    data["recorded_at"] = row["recorded_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    data["withdraws"] = str(row["withdraws"]) if row["withdraws"] else None
    data["choices"] = orjson.loads(row["choices"])
    data["signals"] = orjson.loads(row["signals"])
    return data


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring the schema to ``SCHEMA_VERSION``; safe when several nodes start at once."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        for version in range(current + 1, len(MIGRATIONS) + 1):
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
            log.info("store schema migrated to version %d", version)
        return len(MIGRATIONS)


class PostgresStore:
    """Writes each batch with one INSERT … SELECT FROM unnest(column arrays) statement."""

    name = "postgres"

    def __init__(self, dsn: str, *, pool_size: int = 4, connect_timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        """Connect and migrate; an unreachable server is retried later, not fatal."""
        try:
            await self._ensure()
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            log.warning("PostgreSQL store unreachable at start-up (%s); will retry", exc)

    async def _ensure(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
                try:
                    await migrate(conn)
                finally:
                    await conn.close()
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=self.connect_timeout,
                    command_timeout=60,
                )
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def write_batch(self, records: Sequence[ConsentRecord]) -> None:
        rows: list[str] = []
        refused: list[str] = []
        for r in records:
            try:
                rows.append(_row(r))
            except (ValueError, TypeError):
                refused.append(r.record_id)
        await self._write(rows, refused)

    async def write_json(self, record_ids: Sequence[str], bodies: Sequence[str]) -> None:
        await self._write(list(bodies), [])

    async def _write(self, rows: list[str], refused: list[str]) -> None:
        try:
            pool = await self._ensure()
            try:
                await self._copy(pool, rows)
            except _REFUSED:
                # One bad row fails the whole COPY: find it by writing rows one at a time.
                refused.extend(await self._one_by_one(pool, rows))
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise SinkError(f"PostgreSQL: {exc}") from exc
        if refused:
            raise PermanentSinkError(refused, "PostgreSQL refused the record's values")

    async def _copy(self, pool: asyncpg.Pool, rows: list[str]) -> None:
        if not rows:
            return
        batch = "[" + ",".join(rows) + "]"
        async with pool.acquire() as conn:
            await conn.execute(_WRITE, batch)

    async def _one_by_one(self, pool: asyncpg.Pool, rows: list[str]) -> list[str]:
        refused = []
        for row in rows:
            try:
                await self._copy(pool, [row])
            except _REFUSED as exc:
                record_id = str(orjson.loads(row)["record_id"])
                log.error("PostgreSQL refused record %s: %s", record_id, exc)
                refused.append(record_id)
        return refused

    async def subject_history(self, site: str, subject_id: str) -> dict[str, Any]:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLS} FROM consent_records WHERE site = $1 AND subject_id = $2 "
                "ORDER BY recorded_at DESC, record_id DESC LIMIT $3",
                site, subject_id, HISTORY_LIMIT,
            )  # fmt: skip
            latest = await conn.fetchrow(
                f"SELECT {', '.join('r.' + c for c in COLUMNS)} FROM consent_latest l "
                "JOIN consent_records r ON r.record_id = l.record_id "
                "WHERE l.site = $1 AND l.subject_id = $2",
                site, subject_id,
            )  # fmt: skip
        return {
            "current": _record_json(latest) if latest else None,
            "history": [_record_json(r) for r in rows],
        }

    async def publish_version(
        self,
        site_id: str,
        banner_version: str,
        consent_revision: str,
        texts_by_locale: Mapping[str, Mapping[str, Any]],
    ) -> None:
        texts = orjson.dumps({k: dict(v) for k, v in texts_by_locale.items()}).decode()
        pool = await self._ensure()
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO banner_versions (site, banner_version, consent_revision, texts) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                site_id, banner_version, consent_revision, texts,
            )  # fmt: skip

    async def list_versions(self, site_id: str) -> list[dict[str, Any]]:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT banner_version, consent_revision, published_at FROM banner_versions "
                "WHERE site = $1 ORDER BY published_at DESC, banner_version",
                site_id,
            )
        return [
            {
                "banner_version": r["banner_version"],
                "consent_revision": r["consent_revision"],
                "published_at": r["published_at"].isoformat(),
            }
            for r in rows
        ]

    async def banner_version(self, site_id: str, banner_version: str) -> dict[str, Any] | None:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT consent_revision, texts, published_at FROM banner_versions "
                "WHERE site = $1 AND banner_version = $2",
                site_id, banner_version,
            )  # fmt: skip
        if row is None:
            return None
        return {
            "site": site_id,
            "banner_version": banner_version,
            "consent_revision": row["consent_revision"],
            "texts": orjson.loads(row["texts"]),
            "published_at": row["published_at"].isoformat(),
        }
