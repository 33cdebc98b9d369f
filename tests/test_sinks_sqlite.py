"""The embedded store: exactly once, newest wins, history and banner texts."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.sinks import open_sinks, store_for
from gateway.sinks.postgres import PostgresStore
from gateway.sinks.sqlite import SCHEMA_VERSION, SqliteStore
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
        records[1].record_id,
        records[0].record_id,
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


# The version 1 layout, as shipped before the single-index schema.
_V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE consent_records (
    record_id TEXT PRIMARY KEY, site TEXT NOT NULL, subject_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL, body TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX consent_records_subject ON consent_records (site, subject_id, recorded_at);
CREATE TABLE latest_state (
    site TEXT NOT NULL, subject_id TEXT NOT NULL, record_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (site, subject_id)
) WITHOUT ROWID;
CREATE TABLE banner_versions (
    site TEXT NOT NULL, banner_version TEXT NOT NULL, consent_revision TEXT NOT NULL,
    texts TEXT NOT NULL, published_at TEXT NOT NULL, PRIMARY KEY (site, banner_version)
) WITHOUT ROWID;
"""


async def test_a_version_1_store_is_migrated_with_its_records(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    old, new = make_record("a"), make_record("a", analytics=False)
    with sqlite3.connect(path) as conn:
        conn.executescript(_V1)
        conn.executemany(
            "INSERT INTO consent_records VALUES (?, ?, ?, ?, ?)",
            [
                (
                    r.record_id,
                    r.site,
                    r.subject_id,
                    r.recorded_at,
                    orjson.dumps(r.as_json()).decode(),
                )
                for r in (new, old)
            ],
        )
        conn.execute("INSERT INTO banner_versions VALUES ('demo', 'v1', 'r1', '{}', 'now')")
    conn.close()
    store = SqliteStore(path)
    await store.open()
    try:
        history = await store.subject_history("demo", "a")
        assert [h["record_id"] for h in history["history"]] == [new.record_id, old.record_id]
        assert history["current"] == new.as_json()
        await store.write_batch([old, make_record("b")])  # still exactly once after migrating
        assert len((await store.subject_history("demo", "a"))["history"]) == 2
        assert [v["banner_version"] for v in await store.list_versions("demo")] == ["v1"]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "latest_state" not in tables and "consent_records_v1" not in tables
    conn.close()


async def test_reopening_keeps_the_schema_and_records(tmp_path: Path) -> None:
    record = make_record("a")
    for _ in range(2):
        store = SqliteStore(tmp_path / "store.sqlite3")
        await store.open()
        await store.write_batch([record])
        assert (await store.subject_history("demo", "a"))["current"] == record.as_json()
        await store.close()


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


def _chain(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    """(audit_heads, chain links as (ref, record_seq, hash), records counted in the rollup)."""
    with sqlite3.connect(path) as conn:
        heads = conn.execute("SELECT node_id, seq, hash FROM audit_heads").fetchall()
        links = conn.execute(
            "SELECT c.ref, c.record_seq, c.hash, r.record_id FROM audit_chain c "
            "JOIN consent_records r ON r.seq = c.record_seq ORDER BY c.node_id, c.seq"
        ).fetchall()
        (counted,) = conn.execute("SELECT coalesce(sum(n), 0) FROM consent_rollup").fetchone()
    conn.close()
    return heads, links, counted


async def test_a_batch_past_one_statement_is_stored_linked_and_counted_once(
    tmp_path: Path,
) -> None:
    """Threat: the multi-row insert stores a record twice or links the wrong row (a link
    whose record_seq points at another record breaks `audit verify`), or counts a redelivered
    record in the reports again. A batch of three statements' worth, with redelivered records
    and a repeated record id in it, is stored, linked and counted exactly once per record,
    each link naming its own row."""
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    records = [make_record(f"s{i % 97}") for i in range(450)]
    first = records[:120]
    await store.write_batch(first)
    again = [*records, *first[:30]]  # redelivered, and repeated within the call
    objects = [r.as_json() for r in again]
    await store.write_stored([orjson.dumps(o).decode() for o in objects], objects)
    await store.write_json([r.record_id for r in first], [orjson.dumps(r.as_json()).decode()
                                                          for r in first])  # fmt: skip
    await store.close()
    heads, links, counted = _chain(tmp_path / "store.sqlite3")
    assert [(node, seq) for node, seq, _ in heads] == [("test-node", 450)]
    assert len(links) == 450 and counted == 450
    assert all(ref == stored_id for ref, _, _, stored_id in links)  # each link its own row
    assert {ref for ref, _, _, _ in links} == {r.record_id for r in records}
    with sqlite3.connect(tmp_path / "store.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM consent_records").fetchone() == (450,)
    conn.close()


async def test_the_chain_is_the_same_whichever_form_the_records_come_in(tmp_path: Path) -> None:
    """The chain links records from the objects the forwarder hands over, not from the stored
    bodies read back: proved equal by building the same chain from each form (and from the
    bodies alone, as migration links an older store)."""
    records = [make_record(f"s{i}", user_agent=f"ua {i}") for i in range(250)]
    heads = []
    for form in ("batch", "json", "stored"):
        store = SqliteStore(tmp_path / form / "store.sqlite3")
        await store.open()
        bodies = [orjson.dumps(r.as_json(), option=orjson.OPT_SORT_KEYS).decode() for r in records]
        if form == "batch":
            await store.write_batch(records)
        elif form == "json":
            await store.write_json([r.record_id for r in records], bodies)
        else:
            await store.write_stored(bodies, [r.as_json() for r in records])
        await store.close()
        heads.append(_chain(tmp_path / form / "store.sqlite3"))
    assert heads[0] == heads[1] == heads[2]
    assert heads[0][0][0][1] == 250
