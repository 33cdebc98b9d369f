"""The PostgreSQL store against the real server: schema, exactly once, newest wins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from gateway.sinks.base import ObjectSink, PermanentSinkError, SinkError
from gateway.sinks.postgres import COLUMNS, MIGRATIONS, SCHEMA_VERSION, PostgresStore, migrate
from tests.pg import make_record, pg_dsn  # noqa: F401
from tests.procs import free_port

pytestmark = pytest.mark.postgres


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresStore]:  # noqa: F811
    s = PostgresStore(pg_dsn, pool_size=2)
    await s.open()
    yield s
    await s.close()


async def test_schema_is_created_and_migrations_are_idempotent(
    store: PostgresStore,
    pg_dsn: str,  # noqa: F811
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await migrate(conn) == SCHEMA_VERSION
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == SCHEMA_VERSION
        tables = {
            r[0]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {"consent_records", "consent_latest", "banner_versions"} <= tables
    finally:
        await conn.close()


async def test_version_1_store_migrates_with_its_records(pg_dsn: str) -> None:  # noqa: F811
    older, newer = make_record("m"), make_record("m")
    conn = await asyncpg.connect(pg_dsn)
    try:  # a store created by schema version 1, holding one record
        await conn.execute(MIGRATIONS[0])
        await conn.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute("INSERT INTO schema_version VALUES (1)")
        await conn.execute(
            f"INSERT INTO consent_records ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} "
            "FROM json_populate_record(NULL::consent_records, $1::json)",
            orjson.dumps(older.as_json()).decode(),
        )
        await conn.execute(
            "INSERT INTO consent_latest SELECT site, subject_id, record_id, recorded_at "
            "FROM consent_records"
        )
    finally:
        await conn.close()
    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        await store.write_batch([older, newer])  # older is stored already
        history = await store.subject_history("demo", "m")
        assert [h["record_id"] for h in history["history"]] == [newer.record_id, older.record_id]
        assert history["current"] == newer.as_json()
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == SCHEMA_VERSION
        collations = await conn.fetch(
            "SELECT table_name, collation_name FROM information_schema.columns "
            "WHERE column_name IN ('site', 'subject_id') "
            "AND table_name IN ('consent_records', 'consent_latest')"
        )
        assert {r["collation_name"] for r in collations} == {"C"}
    finally:
        await conn.close()


async def test_records_land_exactly_once(store: PostgresStore, pg_dsn: str) -> None:  # noqa: F811
    records = [make_record(f"s{i % 50}", key=f"k{i}") for i in range(2500)]
    await store.write_batch(records[:1500])
    await store.write_batch(records[1000:])  # overlapping redelivery
    await store.write_batch(records)
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM consent_records") == 2500
        assert await conn.fetchval("SELECT count(DISTINCT record_id) FROM consent_records") == 2500
        assert await conn.fetchval("SELECT count(*) FROM consent_latest") == 50
    finally:
        await conn.close()
    history = await store.subject_history("demo", "s7")
    assert len(history["history"]) == 50
    assert history["history"][0] == records[2457].as_json()  # round trip is exact
    assert history["current"] == records[2457].as_json()


async def test_newer_record_wins_even_when_it_arrives_first(store: PostgresStore) -> None:
    older = make_record("a", analytics=True)
    newer = make_record("a", analytics=False)
    await store.write_batch([newer])
    await store.write_batch([older])
    current = (await store.subject_history("demo", "a"))["current"]
    assert current["record_id"] == newer.record_id
    assert current["choices"]["analytics"] is False
    # Both in one batch, oldest last: still the newest.
    newest = make_record("a")
    await store.write_batch([newest, make_record("b"), older])
    assert (await store.subject_history("demo", "a"))["current"]["record_id"] == newest.record_id
    tie_a = make_record("t", recorded_at="2026-01-01T00:00:00.000000Z")
    tie_b = make_record("t", recorded_at="2026-01-01T00:00:00.000000Z")
    await store.write_batch([tie_b])
    await store.write_batch([tie_a])
    assert (await store.subject_history("demo", "t"))["current"]["record_id"] == tie_b.record_id


async def test_redelivery_moves_the_latest_state_only_for_newer_records(
    store: PostgresStore,
    pg_dsn: str,  # noqa: F811
) -> None:
    first = [make_record(f"r{i}") for i in range(3)]
    await store.write_batch(first)
    newer = make_record("r0")
    # Delivered again after a lost ack, together with one new record: the stored ones are
    # skipped (COPY fails on the key, the staging path takes over), the new one wins.
    await store.write_batch([*first, newer])
    assert (await store.subject_history("demo", "r0"))["current"] == newer.as_json()
    await store.write_batch(first)  # an old redelivery alone does not move it back
    assert (await store.subject_history("demo", "r0"))["current"] == newer.as_json()
    for r in first[1:]:
        assert (await store.subject_history("demo", r.subject_id))["current"] == r.as_json()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM consent_records") == 4
    finally:
        await conn.close()


async def test_concurrent_batches_on_the_same_subjects_keep_the_newest(
    store: PostgresStore,
    pg_dsn: str,  # noqa: F811
) -> None:
    assert isinstance(store, ObjectSink)
    records = [make_record(f"c{i % 40}") for i in range(1200)]
    batches = [records[i::4] for i in range(4)]  # every batch touches every subject
    for _ in range(2):  # the second round is all redelivery: nothing changes
        await asyncio.gather(*(store.write_objects([r.as_json() for r in b]) for b in batches))
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM consent_records") == 1200
        latest = dict(await conn.fetch("SELECT subject_id, record_id::text FROM consent_latest"))
    finally:
        await conn.close()
    assert latest == {f"c{i}": records[1160 + i].record_id for i in range(40)}


async def test_refused_record_is_named_and_the_rest_land(store: PostgresStore) -> None:
    good = [make_record("g1"), make_record("g2")]
    poison = make_record("p", user_agent="nul\x00byte")  # PostgreSQL text cannot hold NUL
    bad_id = make_record("q", record_id="not-a-uuid")
    with pytest.raises(PermanentSinkError) as info:
        await store.write_batch([good[0], poison, bad_id, good[1]])
    assert set(info.value.record_ids) == {poison.record_id, "not-a-uuid"}
    for r in good:
        assert (await store.subject_history("demo", r.subject_id))["current"]["record_id"] == (
            r.record_id
        )


@pytest.mark.parametrize(
    "change",
    [
        {"recorded_at": "yesterday"},  # not a timestamp
        {"gpc": "yes"},  # not a boolean
        {"site": None},  # NOT NULL
        {"withdraws": "not-a-uuid"},
    ],
)
async def test_refused_objects_are_named(store: PostgresStore, change: dict[str, object]) -> None:
    good = make_record("fine")
    bad = {**make_record("bad").as_json(), **change}
    with pytest.raises(PermanentSinkError) as info:
        await store.write_objects([bad, good.as_json()])
    assert info.value.record_ids == (bad["record_id"],)
    assert (await store.subject_history("demo", "fine"))["current"] == good.as_json()


async def test_banner_versions(store: PostgresStore) -> None:
    texts = {"de": {"title": "Datenschutz"}}
    await store.publish_version("demo", "v1", "r1", texts)
    await store.publish_version("demo", "v1", "r1", {"de": {"title": "geändert"}})
    stored = await store.banner_version("demo", "v1")
    assert stored is not None
    assert stored["texts"] == texts
    assert [v["banner_version"] for v in await store.list_versions("demo")] == ["v1"]


async def test_unreachable_server_is_transient_not_fatal() -> None:
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/x", connect_timeout=1)
    await store.open()  # logs and carries on: the outbox keeps recording
    with pytest.raises(SinkError) as info:
        await store.write_batch([make_record()])
    assert not isinstance(info.value, PermanentSinkError)
    await store.close()
