"""The PostgreSQL store against the real server: schema, exactly once, newest wins."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.sinks.base import PermanentSinkError, SinkError
from gateway.sinks.postgres import SCHEMA_VERSION, PostgresStore, migrate
from tests.pg import free_port, make_record, pg_dsn  # noqa: F401

pytestmark = pytest.mark.postgres


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresStore]:  # noqa: F811
    s = PostgresStore(pg_dsn, pool_size=2)
    await s.open()
    yield s
    await s.close()


async def test_schema_is_created_and_migrations_are_idempotent(
    store: PostgresStore, pg_dsn: str  # noqa: F811
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await migrate(conn) == SCHEMA_VERSION
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == SCHEMA_VERSION
        tables = {r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"consent_records", "consent_latest", "banner_versions"} <= tables
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
