"""The PostgreSQL central store: append-only records, latest state per subject, banner texts."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from gateway.core.model import RECORD_COLUMNS
from gateway.core.record_codec import CONSENT_KIND, PREFERENCE_KIND, Record, kind_of
from gateway.sinks import (
    directory_postgres,
    pg_common,
    postgres_audit,
    postgres_partitions,
    postgres_preferences,
)
from gateway.sinks.base import HISTORY_LIMIT, PermanentSinkError, SinkError
from gateway.sinks.pg_common import PgPooled, first_keyed, rfc3339
from gateway.sinks.postgres_partitions import Partitions, month_of

log = logging.getLogger("gateway.sinks.postgres")

_MIGRATION_LOCK = 0x636F6E73  # any constant: serialises start-up migrations across nodes

COLUMNS = RECORD_COLUMNS  # the table has one column per record field, in field order
_COLS = ", ".join(COLUMNS)

# Version 1: the tables.
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
    # Version 2, measured on the forwarder's path (CPU per record): site and subject_id in
    # byte order ("C"), since glibc's collation costs microseconds in every index comparison
    # and sort; consent_latest with room on each page, so moving a subject's latest state is
    # a HOT update (no new index entry); and the latest state follows every insert into
    # consent_records, from a statement trigger over the inserted rows, whichever statement
    # writes them (COPY, or INSERT … ON CONFLICT DO NOTHING): only newly stored records move
    # it, the newest wins by (recorded_at, record_id) in any arrival order, and subjects are
    # locked in key order so concurrent batches cannot deadlock. On a big existing store this
    # migration rebuilds the two tables' indexes under an exclusive lock.
    """
    ALTER TABLE consent_records
        ALTER COLUMN site TYPE text COLLATE "C", ALTER COLUMN subject_id TYPE text COLLATE "C";
    ALTER TABLE consent_latest
        ALTER COLUMN site TYPE text COLLATE "C", ALTER COLUMN subject_id TYPE text COLLATE "C";
    ALTER TABLE consent_latest SET (fillfactor = 50);
    CREATE FUNCTION consent_latest_follow() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO consent_latest (site, subject_id, record_id, recorded_at)
        SELECT DISTINCT ON (site, subject_id) site, subject_id, record_id, recorded_at
        FROM inserted ORDER BY site, subject_id, recorded_at DESC, record_id DESC
        ON CONFLICT (site, subject_id) DO UPDATE
        SET record_id = excluded.record_id, recorded_at = excluded.recorded_at
        WHERE (excluded.recorded_at, excluded.record_id)
            > (consent_latest.recorded_at, consent_latest.record_id);
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER consent_latest_follow AFTER INSERT ON consent_records
        REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION consent_latest_follow();
    """,
    # Version 3: the audit trail's hash chain and the report rollups (postgres_audit.py).
    postgres_audit.MIGRATION,
    # Version 4: erasure keeps the history verifiable (postgres_audit.py).
    postgres_audit.ERASURE_MIGRATION,
    # Version 5: consent_records partitioned by month, keyed by (site, subject) first
    # (postgres_partitions.py).
    postgres_partitions.MIGRATION,
    # Version 6: preference records, chained like consents (postgres_preferences.py).
    postgres_audit.PREFERENCE_MIGRATION,
)
SCHEMA_VERSION = len(MIGRATIONS)

# A batch goes in with one binary COPY straight into consent_records (one statement, one
# commit): measured, PostgreSQL's own JSON parsing costs 25-40 µs per record, several times
# decoding in Python plus asyncpg's binary encoding. COPY has no ON CONFLICT, so a batch of
# which some records are stored already (delivered again after a lost ack) fails as a whole
# on the primary key and goes through a staging table instead.
_STAGING = (
    "CREATE TEMP TABLE consent_staging (LIKE consent_records INCLUDING DEFAULTS) ON COMMIT DROP"
)
_FROM_STAGING = (
    f"INSERT INTO consent_records ({_COLS}) SELECT {_COLS} FROM consent_staging "
    "ON CONFLICT (site, subject_id, recorded_at, record_id) DO NOTHING"
)

# What PostgreSQL (or encoding a value for it) refuses for good, found row by row.
_REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, ValueError, TypeError)

_timestamp = datetime.fromisoformat


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _row(r: Mapping[str, Any]) -> tuple[Any, ...]:
    """A record's JSON object as a COPY row in ``COLUMNS`` order (KeyError/ValueError if not)."""
    return (
        r["record_id"], _timestamp(r["recorded_at"]), r["site"], r["subject_id"],
        r["banner_version"], r["consent_revision"], r["action"], _json(r["choices"]),
        r["channel"], r["language"], r["rule_id"], r["region_country"], r["region_subdivision"],
        r["region_source"], r["gpc"], r["ip_truncated"], r["user_agent"], r["origin"],
        r["page_url"], r["node_id"], r["idempotency_key"], r["withdraws"], _json(r["signals"]),
    )  # fmt: skip


def _record_json(row: Mapping[str, Any]) -> dict[str, Any]:
    data = {name: row[name] for name in COLUMNS}
    data["record_id"] = str(row["record_id"])
    data["recorded_at"] = rfc3339(row["recorded_at"])
    data["withdraws"] = str(row["withdraws"]) if row["withdraws"] else None
    data["choices"] = orjson.loads(row["choices"])
    data["signals"] = orjson.loads(row["signals"])
    return data


# Brings the schema to ``SCHEMA_VERSION``; safe when several nodes start at once.
migrate = pg_common.migrator(
    lock=_MIGRATION_LOCK, table="schema_version", migrations=MIGRATIONS, what="store"
)


async def _insert(conn: asyncpg.Connection, rows: Callable[[], Iterable[tuple[Any, ...]]]) -> None:
    """Store every row that is not stored yet, in one transaction (``rows`` may run twice)."""
    try:
        await conn.copy_records_to_table("consent_records", records=rows(), columns=COLUMNS)
    except asyncpg.UniqueViolationError:
        async with conn.transaction():
            await conn.execute(_STAGING)
            await conn.copy_records_to_table("consent_staging", records=rows(), columns=COLUMNS)
            await conn.execute(_FROM_STAGING)


async def _one_by_one(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> list[str]:
    """Store the rows singly; the record_ids of those PostgreSQL refuses."""
    refused = []
    for row in rows:
        try:
            await _insert(conn, functools.partial(tuple, [row]))
        except _REFUSED as exc:
            log.error("PostgreSQL refused record %s: %s", row[0], exc)
            refused.append(str(row[0]))
    return refused


class PostgresStore(PgPooled):
    """Writes each batch with one binary COPY; a trigger keeps the latest state per subject."""

    name = "postgres"
    what = "PostgreSQL store"

    def __init__(self, dsn: str, *, pool_size: int = 4, connect_timeout: float = 5.0) -> None:
        super().__init__(dsn, pool_size=pool_size, connect_timeout=connect_timeout)
        self._partitions = Partitions()

    def migrations(self) -> Sequence[pg_common.Migrate]:
        # The latest preference state lives in the directory's tables.
        return (migrate, directory_postgres.migrate, self._ahead)

    async def _ahead(self, conn: asyncpg.Connection) -> None:
        self._partitions.forget()
        await self._partitions.ensure(conn, set())

    async def write_batch(self, records: Sequence[Record]) -> None:
        await self.write_objects([r.as_json() for r in records])

    async def write_objects(self, objects: Sequence[Mapping[str, Any]]) -> None:
        others = [o for o in objects if kind_of(o) != CONSENT_KIND]
        if others:
            objects = [o for o in objects if kind_of(o) == CONSENT_KIND]
            await self._write_others(others)
        if objects:
            await self._write_consents(objects)

    async def _write_others(self, objects: Sequence[Mapping[str, Any]]) -> None:
        """Preference changes and identity links (postgres_preferences.py)."""
        refused: list[str] = []
        try:
            pool = await self._ensure()
            async with pool.acquire() as conn:
                try:
                    await postgres_preferences.write(conn, objects)
                except (*_REFUSED, KeyError):
                    for obj in objects:  # find the bad one: one record per transaction
                        try:
                            await postgres_preferences.write(conn, [obj])
                        except (*_REFUSED, KeyError) as exc:
                            log.error("PostgreSQL refused record %s: %r", obj.get("record_id"), exc)
                            refused.append(str(obj.get("record_id")))
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise SinkError(f"PostgreSQL: {exc}") from exc
        if refused:
            raise PermanentSinkError(refused, "PostgreSQL refused the record's values")

    async def preference_history(self, site: str, subject_id: str) -> list[dict[str, Any]]:
        pool = await self._ensure()
        async with pool.acquire() as conn:
            return await postgres_preferences.history(conn, site, subject_id)

    async def _write_consents(self, objects: Sequence[Mapping[str, Any]]) -> None:
        refused: dict[str, None] = {}  # record_ids in order, once each

        def rows() -> Iterator[tuple[Any, ...]]:
            # Built as COPY consumes them: fewer live objects, and PostgreSQL starts on the
            # first rows while the last ones are still being encoded.
            for obj in objects:
                try:
                    yield _row(obj)
                except (KeyError, ValueError, TypeError):
                    refused[str(obj.get("record_id"))] = None

        months = {m for o in objects if (m := month_of(o.get("recorded_at")))}
        try:
            async with self._conn() as conn:
                if self._partitions.missing(months):
                    await self._partitions.ensure(conn, months)
                try:
                    await self._insert(conn, rows, months)
                except _REFUSED:
                    # One bad row fails the whole COPY: find it by writing rows one at a time.
                    refused.update(dict.fromkeys(await _one_by_one(conn, list(rows()))))
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise SinkError(f"PostgreSQL: {exc}") from exc
        if refused:
            raise PermanentSinkError(list(refused), "PostgreSQL refused the record's values")

    async def _insert(
        self,
        conn: asyncpg.Connection,
        rows: Callable[[], Iterable[tuple[Any, ...]]],
        months: set[str],
    ) -> None:
        """``_insert``, once more after making the partitions again if a row found none
        (retention, run since this node last looked, dropped one)."""
        try:
            await _insert(conn, rows)
        except asyncpg.CheckViolationError as exc:
            if "no partition" not in str(exc):
                raise
            self._partitions.forget()
            await self._partitions.ensure(conn, months)
            await _insert(conn, rows)

    async def keyed_record(
        self, kind: str, site: str, subject_id: str, key: str, since: str
    ) -> dict[str, Any] | None:
        after = datetime.fromisoformat(since)
        async with self._conn() as conn:
            if kind == PREFERENCE_KIND:
                return await postgres_preferences.keyed(conn, site, subject_id, key, after)
            if kind != CONSENT_KIND:
                raise ValueError(f"no keyed records of kind {kind!r}")
            row = await first_keyed(conn, "consent_records", _COLS, site, subject_id, key, after)
        return None if row is None else _record_json(row)

    async def subject_history(self, site: str, subject_id: str) -> dict[str, Any]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLS} FROM consent_records WHERE site = $1 AND subject_id = $2 "
                "ORDER BY recorded_at DESC, record_id DESC LIMIT $3",
                site, subject_id, HISTORY_LIMIT,
            )  # fmt: skip
            latest = await conn.fetchrow(
                f"SELECT {', '.join('r.' + c for c in COLUMNS)} FROM consent_latest l "
                "JOIN consent_records r ON r.site = l.site AND r.subject_id = l.subject_id "
                "AND r.recorded_at = l.recorded_at AND r.record_id = l.record_id "
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
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO banner_versions (site, banner_version, consent_revision, texts) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                site_id, banner_version, consent_revision, texts,
            )  # fmt: skip

    async def list_versions(self, site_id: str) -> list[dict[str, Any]]:
        async with self._conn() as conn:
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
        async with self._conn() as conn:
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
