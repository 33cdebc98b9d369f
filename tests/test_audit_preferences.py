"""Preference records in the audit chain, on both central stores (the embedded SQLite store
did not chain them before schema version 4): `audit verify` locates a changed, removed,
forged or reordered preference record and exits non-zero naming it; consents and preference
changes interleaved in one node's chain verify; erasure keeps the chain green; a store from
before version 4 has its preference records linked when opened.

Threat: someone with write access to the store rewrites what a subject chose to receive
(e.g. turns an opt-out back into an opt-in) after the fact.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import orjson
import pytest

from gateway.audit import service
from gateway.core.settings import Settings
from gateway.rights.base import store_for
from gateway.sinks.directory_sqlite import SqliteDirectory
from gateway.sinks.postgres import PostgresStore
from gateway.sinks.sqlite import SqliteStore
from tests.audit_stores import Backend, backend_fixture  # noqa: F401
from tests.pg import make_record
from tests.test_preference_records import CHANGES, preference


def _records_store(settings: Settings) -> SqliteStore | PostgresStore:
    if settings.store_url:
        return PostgresStore(settings.store_url, pool_size=1)
    return SqliteStore(settings.data_dir / "store.sqlite3")


@pytest.fixture
async def filled(backend: Backend) -> tuple[Backend, list[Any]]:
    """30 preference changes of 3 subjects interleaved with 10 consents, in 3 batches (one
    delivered twice: a lost ack links nothing twice)."""
    prefs = [preference(f"p{i % 3}", CHANGES[i % len(CHANGES)]) for i in range(30)]
    consents = [make_record(f"c{i}") for i in range(10)]
    store = _records_store(backend.settings)
    await store.open()
    try:
        await store.write_batch([*prefs[:10], *consents[:5]])
        await store.write_batch([*prefs[10:20], *consents[5:]])
        await store.write_batch(prefs[10:20])
        await store.write_batch(prefs[20:])
    finally:
        await store.close()
    return backend, prefs


async def _first(backend: Backend, **kw: Any) -> tuple[str, str | None, str | None]:
    report = await service.verify(backend.settings, **kw)
    assert report.first_break is not None, report.as_json()
    b = report.first_break
    return b.problem, b.ref, b.kind


async def _set_channel(backend: Backend, record_id: str, channel: str) -> None:
    if backend.name == "sqlite":
        await backend.sql(
            "UPDATE preference_records SET body = json_set(body, '$.channel', ?) "
            "WHERE record_id = ?", channel, record_id,
        )  # fmt: skip
    else:
        await backend.sql(
            "UPDATE preference_records SET channel = ? WHERE record_id = ?::uuid",
            channel, record_id,
        )  # fmt: skip


async def test_a_clean_store_verifies_consents_and_preferences(
    filled: tuple[Backend, list[Any]],
) -> None:
    backend, prefs = filled
    report = await service.verify(backend.settings)
    assert report.ok, report.as_json()
    assert report.kinds["preference"].checked == len(prefs) == 30
    assert report.kinds["consent"].checked == 10
    assert await backend.sql("SELECT node_id, seq FROM audit_heads") == [("test-node", 40)]
    linked = await backend.sql("SELECT count(*) FROM audit_chain WHERE kind = 'preference'")
    assert linked == [(30,)]
    await backend.assert_cli_verifies("preference", 30)


async def test_a_changed_preference_record_is_located_by_the_cli(
    filled: tuple[Backend, list[Any]],
) -> None:
    backend, prefs = filled
    await _set_channel(backend, prefs[17].record_id, "callcenter")
    assert await _first(backend) == ("changed", prefs[17].record_id, "preference")
    ran = await backend.cli_verify()
    assert ran.returncode == 2
    assert f"record {prefs[17].record_id} [preference]" in ran.stdout
    assert ran.stdout.count("BROKEN: changed at node 'test-node'") == 1


async def test_a_changed_choice_is_located(filled: tuple[Backend, list[Any]]) -> None:
    """The threat itself: an opt-out silently turned into an opt-in."""
    backend, prefs = filled
    victim = prefs[0].record_id  # {"channels": {"email": True, "sms": True}}
    if backend.name == "sqlite":
        await backend.sql(
            "UPDATE preference_records SET body = json_set(body, '$.preferences.channels.sms', "
            "json('false')) WHERE record_id = ?", victim,
        )  # fmt: skip
    else:
        await backend.sql(
            "UPDATE preference_records SET preferences = "
            "jsonb_set(preferences, '{channels,sms}', 'false') WHERE record_id = ?::uuid",
            victim,
        )  # fmt: skip
    assert await _first(backend) == ("changed", victim, "preference")


async def test_a_removed_preference_record_is_located(filled: tuple[Backend, list[Any]]) -> None:
    backend, prefs = filled
    cast = "" if backend.name == "sqlite" else "::uuid"
    await backend.sql(f"DELETE FROM preference_records WHERE record_id = ?{cast}",
                      prefs[25].record_id)  # fmt: skip
    assert await _first(backend) == ("removed", prefs[25].record_id, "preference")
    await backend.sql("DELETE FROM audit_chain WHERE ref = ?", prefs[25].record_id)
    report = await service.verify(backend.settings)
    assert report.first_break is not None
    assert report.first_break.problem == "missing_links"
    ran = await backend.cli_verify()
    assert ran.returncode == 2 and "missing_links at node 'test-node'" in ran.stdout


async def test_a_forged_preference_record_is_found(filled: tuple[Backend, list[Any]]) -> None:
    backend, _prefs = filled
    forged = preference("p1", {"channels": {"email": True}})
    body = orjson.dumps(forged.as_json()).decode()
    if backend.name == "sqlite":
        await backend.sql(
            "INSERT INTO preference_records (site, subject_id, recorded_at, record_id, body) "
            "VALUES (?, ?, ?, ?, ?)",
            forged.site, forged.subject_id, forged.recorded_at, forged.record_id, body,
        )  # fmt: skip
    else:
        # The trigger would link it: a forger with the owner's rights switches it off first.
        await backend.sql("ALTER TABLE preference_records DISABLE TRIGGER audit_preference_follow")
        store = PostgresStore(backend.settings.store_url, pool_size=1)
        await store.open()
        await store.write_batch([forged])
        await store.close()
    assert await _first(backend) == ("unlinked", forged.record_id, "preference")
    ran = await backend.cli_verify()
    assert ran.returncode == 2 and f"record {forged.record_id} [preference]" in ran.stdout


async def test_reordered_preference_records_are_located(
    filled: tuple[Backend, list[Any]],
) -> None:
    """Two links swap places (each with its record): the later one no longer follows."""
    backend, _prefs = filled
    for swap in ("seq + 100 WHERE seq IN (3, 4)", "107 - seq WHERE seq IN (103, 104)"):
        await backend.sql(f"UPDATE audit_chain SET seq = {swap}")
    report = await service.verify(backend.settings)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.seq) == ("out_of_order", 3)


async def test_erasure_keeps_the_preference_chain_but_not_a_tamper(
    filled: tuple[Backend, list[Any]],
) -> None:
    backend, prefs = filled
    if backend.name == "sqlite":  # the identity tables erasure reaches
        directory = SqliteDirectory(backend.path)
        await directory.open()
        await directory.close()
    rights = store_for(backend.settings)
    await rights.open()
    try:
        await rights.erase("demo", ["p2"], "req-1", "2026-12-06T10:00:00.000000Z")
    finally:
        await rights.close()
    mine = [p.record_id for p in prefs if p.subject_id == "p2"]
    if backend.name == "sqlite":
        left = await backend.sql(
            "SELECT count(*) FROM preference_records WHERE subject_id = 'p2' "
            "AND json_extract(body, '$.user_agent') != ''"
        )
    else:
        left = await backend.sql(
            "SELECT count(*) FROM preference_records WHERE subject_id = 'p2' AND user_agent <> ''"
        )
    assert left == [(0,)]
    report = await service.verify(backend.settings)
    assert report.ok, report.as_json()
    await _set_channel(backend, mine[3], "app")
    # PostgreSQL checks an erased row against the erasure link its erasure appended.
    kind = "erasure" if backend.name == "postgres" else "preference"
    assert await _first(backend) == ("changed", mine[3], kind)


def test_an_embedded_store_from_before_version_4_has_its_preferences_linked(
    tmp_path: Any,
) -> None:
    """A version 3 store (consents chained, preference records not): opening it links them
    after the consents, and the chain verifies."""
    from tests.helpers import make_settings

    settings = make_settings(tmp_path, audit_key="k" * 32)
    path = settings.data_dir / "store.sqlite3"
    prefs = [preference(f"p{i % 3}", CHANGES[i % len(CHANGES)]) for i in range(12)]

    async def write(items: list[Any]) -> None:
        store = SqliteStore(path)
        await store.open()
        await store.write_batch(items)
        await store.close()

    asyncio.run(write([make_record(f"c{i}") for i in range(5)]))
    # What version 3 left: preference records stored without links.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for p in prefs:
            conn.execute(
                "INSERT INTO preference_records (site, subject_id, recorded_at, record_id, body) "
                "VALUES (?, ?, ?, ?, ?)",
                (p.site, p.subject_id, p.recorded_at, p.record_id,
                 orjson.dumps(p.as_json()).decode()),
            )  # fmt: skip
        conn.execute("UPDATE schema_version SET version = 3")
    finally:
        conn.close()
    before = asyncio.run(service.verify(settings))
    assert {(p.problem, p.kind) for p in before.problems} == {("unlinked", "preference")}
    asyncio.run(write([make_record("c-after")]))  # opening migrates; the new consent follows
    report = asyncio.run(service.verify(settings))
    assert report.ok, report.as_json()
    assert report.kinds["preference"].checked == 12 and report.kinds["consent"].checked == 6
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(4,)]
        kinds = [k for (k,) in conn.execute("SELECT kind FROM audit_chain ORDER BY seq")]
    finally:
        conn.close()
    assert kinds == ["consent"] * 5 + ["preference"] * 12 + ["consent"]
