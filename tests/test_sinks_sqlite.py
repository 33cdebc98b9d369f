"""The embedded store: exactly once, newest wins, history and banner texts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.sinks import open_sinks, store_for
from gateway.sinks.postgres import PostgresStore
from gateway.sinks.sqlite import SqliteStore
from gateway.sinks.webhook import WebhookSink
from tests.pg import make_record


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.sqlite3")
    await s.open()
    yield s
    await s.close()


async def test_records_land_exactly_once(store: SqliteStore) -> None:
    records = [make_record("a"), make_record("a"), make_record("b")]
    await store.write_batch(records)
    await store.write_batch(records[1:])  # a redelivered batch
    history = await store.subject_history("demo", "a")
    assert [h["record_id"] for h in history["history"]] == [
        records[1].record_id, records[0].record_id,
    ]
    assert history["history"][0] == records[1].as_json()


async def test_newer_record_wins_even_when_it_arrives_first(store: SqliteStore) -> None:
    older = make_record("a", analytics=True)
    newer = make_record("a", analytics=False)
    await store.write_batch([newer])
    await store.write_batch([older])
    current = (await store.subject_history("demo", "a"))["current"]
    assert current["record_id"] == newer.record_id
    # Same timestamp: the larger record id breaks the tie, in either arrival order.
    tie_a = make_record("t", recorded_at="2026-01-01T00:00:00.000000Z")
    tie_b = make_record("t", recorded_at="2026-01-01T00:00:00.000000Z")
    await store.write_batch([tie_b, tie_a])
    assert (await store.subject_history("demo", "t"))["current"]["record_id"] == tie_b.record_id


async def test_unknown_subject_has_empty_history(store: SqliteStore) -> None:
    assert await store.subject_history("demo", "nobody") == {"current": None, "history": []}


async def test_banner_versions_keep_the_first_texts(store: SqliteStore) -> None:
    texts = {"de": {"title": "Datenschutz"}, "en": {"title": "Privacy"}}
    await store.publish_version("demo", "v1", "r1", texts)
    await store.publish_version("demo", "v1", "r1", {"en": {"title": "changed"}})
    stored = await store.banner_version("demo", "v1")
    assert stored is not None
    assert stored["texts"] == texts
    assert [v["banner_version"] for v in await store.list_versions("demo")] == ["v1"]
    assert await store.banner_version("demo", "v0") is None


def test_sink_selection(tmp_path: Path) -> None:
    base = Settings(data_dir=tmp_path)
    assert isinstance(store_for(base), SqliteStore)
    assert isinstance(store_for(base.replace(store_url="postgres://x/y")), PostgresStore)
    assert isinstance(store_for(base.replace(store_url="postgresql://x/y")), PostgresStore)
    sinks = open_sinks(base.replace(webhook_url="http://127.0.0.1:9/h", webhook_secret="s"))
    assert [type(s) for s in sinks] == [SqliteStore, WebhookSink]
    for bad in (
        base.replace(store_url="mysql://x"),
        base.replace(webhook_url="http://127.0.0.1:9/h"),
        base.replace(webhook_url="ftp://x", webhook_secret="s"),
    ):
        with pytest.raises(ConfigError):
            open_sinks(bad)
