"""consent_records partitioned by month: the migration from the schema version before (4)
keeps every record (and the audit chain over them, erasures included), partitions are made
ahead and on demand, there is no default partition, and the store's queries are served by
indexes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from gateway.audit import service
from gateway.core.model import ConsentRecord
from gateway.core.settings import Settings
from gateway.sinks import directory_postgres, pg_common, postgres_partitions
from gateway.sinks.postgres import COLUMNS, MIGRATIONS, SCHEMA_VERSION, PostgresStore
from gateway.sinks.postgres_partitions import AHEAD
from tests.pg import make_record, pg_dsn  # noqa: F401

pytestmark = pytest.mark.postgres
# The schema as the version before partitioning made it (later versions come after it).
BEFORE = MIGRATIONS[: MIGRATIONS.index(postgres_partitions.MIGRATION)]

KEY = "k" * 32


def at(month: str, day: int = 10) -> str:
    return f"{month}-{day:02d}T12:00:00.000000Z"


_ERASE = (
    "UPDATE consent_records SET ip_truncated = NULL, user_agent = '', page_url = '', "
    "idempotency_key = NULL WHERE record_id = $1"
)


async def _previous_store(dsn: str, records: list[ConsentRecord]) -> None:
    """A store as the version before partitioning made it, holding ``records`` (chained by
    its triggers)."""
    conn = await asyncpg.connect(dsn)
    try:
        await pg_common.migrate(
            conn, lock=1, table="schema_version", migrations=BEFORE, what="store"
        )
        for r in records:  # one statement each: chained in this order
            await conn.execute(
                f"INSERT INTO consent_records ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} "
                "FROM json_populate_record(NULL::consent_records, $1::json)",
                orjson.dumps(r.as_json()).decode(),
            )
        await conn.execute(_ERASE, records[1].record_id)  # a deletion request, before
    finally:
        await conn.close()


@pytest.fixture
async def migrated(pg_dsn: str) -> AsyncIterator[tuple[PostgresStore, list[ConsentRecord]]]:  # noqa: F811
    records = [
        make_record("a", recorded_at=at("2025-11"), node_id="n1"),
        make_record("b", recorded_at=at("2025-11", 11), node_id="n2"),
        make_record("a", recorded_at=at("2025-12"), node_id="n1"),
        make_record("b", recorded_at=at("2026-01"), node_id="n1"),
        make_record("a", recorded_at=at("2025-10"), node_id="n2"),  # late: older than a's
    ]
    await _previous_store(pg_dsn, records)
    store = PostgresStore(pg_dsn, pool_size=2)
    await store.open()  # migrates to the partitioned version
    yield store, records
    await store.close()


async def test_records_of_the_version_before_survive_the_migration_whole(
    migrated: tuple[PostgresStore, list[ConsentRecord]],
    pg_dsn: str,  # noqa: F811
) -> None:
    store, records = migrated
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == SCHEMA_VERSION
        kind = await conn.fetchval("SELECT relkind FROM pg_class WHERE relname = 'consent_records'")
        assert kind == b"p"
        ids = await conn.fetch("SELECT record_id::text AS id FROM consent_records")
        assert sorted(r["id"] for r in ids) == sorted(r.record_id for r in records)
        parts = {
            r["relname"]
            for r in await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'consent_records'::regclass"
            )
        }
        # Every month of the data, and the ones ahead of now.
        assert {"consent_records_p202510", "consent_records_p202511", "consent_records_p202512",
                "consent_records_p202601"} <= parts  # fmt: skip
        assert len(parts) >= 4 + AHEAD
        # No default partition: nothing lands in a catch-all.
        assert await conn.fetchval(
            "SELECT partdefid FROM pg_partitioned_table "
            "WHERE partrelid = 'consent_records'::regclass"
        ) == 0  # fmt: skip
        assert await conn.fetchval("SELECT to_regclass('consent_records_v4')") is None
    finally:
        await conn.close()
    # The latest state is the newest record, not the last to arrive.
    a = await store.subject_history("demo", "a")
    assert a["current"]["record_id"] == records[2].record_id
    assert [h["record_id"] for h in a["history"]] == [
        records[2].record_id, records[0].record_id, records[4].record_id
    ]  # fmt: skip
    b = await store.subject_history("demo", "b")
    assert b["current"]["record_id"] == records[3].record_id
    # The chain made before still verifies, and goes on after.
    settings = Settings(store_url=pg_dsn, audit_key=KEY)
    assert (await service.verify(settings)).ok
    await store.write_batch([make_record("c", recorded_at=at("2026-02"), node_id="n1")])
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(_ERASE, records[3].record_id)  # and one after
        erasures = await conn.fetchval("SELECT count(*) FROM audit_erasures")
    finally:
        await conn.close()
    assert erasures == 2
    report = await service.verify(settings)
    assert report.ok, report.as_json()
    assert report.checked == len(records) + 1 + 2  # and the two erasure links


async def test_a_month_without_a_partition_gets_one_on_demand(
    migrated: tuple[PostgresStore, list[ConsentRecord]],
    pg_dsn: str,  # noqa: F811
) -> None:
    """An outbox replayed after a long outage brings records of a month long past."""
    store, _ = migrated
    old = make_record("z", recorded_at=at("2023-04"))
    again = make_record("z", recorded_at=at("2023-04", 12))
    await store.write_batch([old])
    await store.write_batch([old, again])  # redelivered with a new one: stored once
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT record_id::text AS id FROM consent_records_p202304 ORDER BY recorded_at"
        )
        assert [r["id"] for r in rows] == [old.record_id, again.record_id]
        # Dropped behind the node's back (as retention does): made again, not refused.
        await conn.execute("DROP TABLE consent_records_p202304")
    finally:
        await conn.close()
    late = make_record("z", recorded_at=at("2023-04", 20))
    await store.write_batch([late])
    assert (await store.subject_history("demo", "z"))["current"]["record_id"] == late.record_id


def _plan(rows: list[asyncpg.Record]) -> str:
    return "\n".join(r[0] for r in rows)


async def test_subject_identity_and_report_queries_use_indexes(
    migrated: tuple[PostgresStore, list[ConsentRecord]],
    pg_dsn: str,  # noqa: F811
) -> None:
    """With sequential scans priced out, a query no index serves still shows a Seq Scan."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        await directory_postgres.migrate(conn)  # the identity links
        await conn.execute("SET enable_seqscan = off")
        queries = {
            "history": "SELECT * FROM consent_records WHERE site = 'demo' AND subject_id = 'a' "
            "ORDER BY recorded_at DESC, record_id DESC LIMIT 50",
            "latest": "SELECT r.* FROM consent_latest l JOIN consent_records r "
            "ON r.site = l.site AND r.subject_id = l.subject_id "
            "AND r.recorded_at = l.recorded_at AND r.record_id = l.record_id "
            "WHERE l.site = 'demo' AND l.subject_id = 'a'",
            "identity": "SELECT subject_id FROM identity_links "
            "WHERE site = 'demo' AND identity_hash = 'h'",
            "export": "SELECT * FROM consent_records WHERE site = 'demo' "
            "AND recorded_at >= '2025-12-01' AND recorded_at < '2026-01-01' "
            "ORDER BY recorded_at, record_id",
        }
        for name, sql in queries.items():
            plan = _plan(await conn.fetch(f"EXPLAIN {sql}"))
            assert "Seq Scan" not in plan, (name, plan)
            assert "Index" in plan, (name, plan)
        # A time range reads only its months' partitions.
        plan = _plan(await conn.fetch(f"EXPLAIN {queries['export']}"))
        assert "consent_records_p202512" in plan and "consent_records_p202511" not in plan
    finally:
        await conn.close()
