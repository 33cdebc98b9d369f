"""The audit chain against the real PostgreSQL store: each kind of tampering is detected
and located by `audit verify` (threat: someone with write access to the store edits the
legal record after the fact)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gateway.audit import service
from gateway.audit.chain import GENESIS, Link, Walker, link
from gateway.core.model import ConsentRecord
from gateway.core.settings import Settings
from gateway.sinks.postgres import PostgresStore
from tests.pg import make_record, pg_dsn  # noqa: F401

pytestmark = pytest.mark.postgres


@pytest.fixture
async def stored(pg_dsn: str) -> tuple[Settings, list[ConsentRecord]]:  # noqa: F811
    store = PostgresStore(pg_dsn, pool_size=2)
    await store.open()
    records = [make_record(f"s{i % 3}") for i in range(30)]
    # Three batches, one delivered twice (a lost ack): each record is linked once.
    for chunk in (records[:10], records[10:25], records[10:25], records[25:]):
        await store.write_batch(chunk)
    await store.close()
    return Settings(store_url=pg_dsn, audit_key="k" * 32), records


async def _sql(settings: Settings, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(settings.store_url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_an_untouched_chain_verifies(stored: tuple[Settings, list[ConsentRecord]]) -> None:
    settings, records = stored
    report = await service.verify(settings)
    assert report.ok, report.as_json()
    assert report.checked == len(records)
    conn = await asyncpg.connect(settings.store_url)
    try:
        seqs = await conn.fetch("SELECT seq, ref FROM audit_chain ORDER BY seq")
        head = await conn.fetchrow("SELECT seq FROM audit_heads WHERE node_id = 'test-node'")
    finally:
        await conn.close()
    assert [r["seq"] for r in seqs] == list(range(1, 31))
    assert [r["ref"] for r in seqs] == [r.record_id for r in records]
    assert head["seq"] == 30


async def test_a_changed_record_is_located(stored: tuple[Settings, list[ConsentRecord]]) -> None:
    settings, records = stored
    await _sql(settings, "UPDATE consent_records SET action = 'accept_all' WHERE record_id = $1",
               records[12].record_id)  # fmt: skip
    report = await service.verify(settings)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.seq) == ("changed", 13)
    assert report.first_break.ref == records[12].record_id


async def test_a_removed_record_is_located(stored: tuple[Settings, list[ConsentRecord]]) -> None:
    settings, records = stored
    await _sql(settings, "DELETE FROM consent_records WHERE record_id = $1", records[4].record_id)
    report = await service.verify(settings)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.seq) == ("removed", 5)


async def test_a_removed_record_and_link_is_located(
    stored: tuple[Settings, list[ConsentRecord]],
) -> None:
    settings, records = stored
    await _sql(settings, "DELETE FROM consent_records WHERE record_id = $1", records[7].record_id)
    await _sql(settings, "DELETE FROM audit_chain WHERE ref = $1", records[7].record_id)
    report = await service.verify(settings)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.seq) == ("missing_links", 9)


async def test_the_last_record_removed_with_its_link_is_found_by_the_head(
    stored: tuple[Settings, list[ConsentRecord]],
) -> None:
    settings, records = stored
    await _sql(settings, "DELETE FROM consent_records WHERE record_id = $1", records[-1].record_id)
    await _sql(settings, "DELETE FROM audit_chain WHERE ref = $1", records[-1].record_id)
    report = await service.verify(settings)
    assert report.first_break is not None
    assert report.first_break.problem == "missing_links"
    assert report.first_break.seq == 30


async def test_an_inserted_record_is_found(stored: tuple[Settings, list[ConsentRecord]]) -> None:
    settings, _records = stored
    forged = make_record("s9")
    await _sql(settings, "ALTER TABLE consent_records DISABLE TRIGGER audit_chain_follow")
    store = PostgresStore(settings.store_url, pool_size=1)
    await store.open()
    await store.write_batch([forged])
    await store.close()
    report = await service.verify(settings)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.ref) == ("unlinked", forged.record_id)


async def test_an_inserted_link_is_located(stored: tuple[Settings, list[ConsentRecord]]) -> None:
    """A forger who also writes a link can compute its hash, but not make the next link
    follow it without rewriting every later link, which a signed checkpoint catches."""
    settings, _records = stored
    await service.checkpoint(settings)
    # Shift links 11.. up by one and put a forged record's link at 11.
    await _sql(settings, "UPDATE audit_chain SET seq = seq + 1000 WHERE seq >= 11")
    await _sql(settings, "UPDATE audit_chain SET seq = seq - 999 WHERE seq >= 1000")
    forged = make_record("s9")
    await _sql(settings, "ALTER TABLE consent_records DISABLE TRIGGER audit_chain_follow")
    store = PostgresStore(settings.store_url, pool_size=1)
    await store.open()
    await store.write_batch([forged])
    await store.close()
    conn = await asyncpg.connect(settings.store_url)
    try:
        prev = bytes(await conn.fetchval("SELECT hash FROM audit_chain WHERE seq = 10"))
        digest = bytes(await conn.fetchval(
            "SELECT audit_consent_digest(r) FROM consent_records r WHERE record_id = $1",
            forged.record_id))  # fmt: skip
        await conn.execute(
            "INSERT INTO audit_chain VALUES "
            "('test-node', 11, 'consent', $1, 'demo', now(), $2, $3)",
            forged.record_id, prev, link(prev, "consent", digest),
        )  # fmt: skip
    finally:
        await conn.close()
    report = await service.verify(settings)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.seq) == ("out_of_order", 12)
    assert any(p.problem == "checkpoint_mismatch" for p in report.problems)


async def test_reordered_records_are_located(stored: tuple[Settings, list[ConsentRecord]]) -> None:
    settings, _records = stored
    await _sql(settings, "UPDATE audit_chain SET seq = -1 WHERE seq = 20")
    await _sql(settings, "UPDATE audit_chain SET seq = 20 WHERE seq = 21")
    await _sql(settings, "UPDATE audit_chain SET seq = 21 WHERE seq = -1")
    report = await service.verify(settings)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.seq) == ("out_of_order", 20)


async def test_a_forged_checkpoint_is_refused(
    stored: tuple[Settings, list[ConsentRecord]],
) -> None:
    settings, _ = stored
    await service.checkpoint(settings)
    assert (await service.verify(settings)).ok
    await _sql(settings, "UPDATE audit_checkpoints SET signature = repeat('0', 64)")
    report = await service.verify(settings)
    assert report.first_break is not None
    assert report.first_break.problem == "checkpoint_forged"


def test_walker_on_its_own() -> None:
    a = link(GENESIS, "consent", b"a" * 32)
    b = link(a, "preference", b"b" * 32)
    walker = Walker()
    assert walker.feed(Link("n", 1, "consent", "r1", GENESIS, a, b"a" * 32)) is None
    assert walker.feed(Link("n", 2, "preference", "p1", a, b, b"b" * 32)) is None
    bad = walker.feed(Link("n", 3, "consent", "r3", b, b, b"c" * 32))
    assert bad is not None and bad.problem == "changed"


async def test_the_cli_exits_non_zero_naming_the_break(
    stored: tuple[Settings, list[ConsentRecord]],
) -> None:
    import subprocess
    import sys

    settings, records = stored
    command = [sys.executable, "-m", "gateway.cli.main", "audit", "verify",
               "--store-url", settings.store_url]  # fmt: skip

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    ok = await asyncio.to_thread(run)
    assert ok.returncode == 0, ok.stderr
    assert "checked: 30" in ok.stdout
    await _sql(settings, "UPDATE consent_records SET gpc = true WHERE record_id = $1",
               records[2].record_id)  # fmt: skip
    bad = await asyncio.to_thread(run)
    assert bad.returncode == 2
    where = f"BROKEN: changed at node 'test-node' link 3 record {records[2].record_id}"
    assert where in bad.stdout


async def test_a_site_is_verified_within_its_nodes_chains(pg_dsn: str) -> None:  # noqa: F811
    """Sites share a node's chain: --site checks its own records' content and every link's
    place, so another site's interleaved records are no gap."""
    store = PostgresStore(pg_dsn, pool_size=1)
    await store.open()
    mixed = [make_record(f"m{i}", site="demo" if i % 2 else "other") for i in range(20)]
    await store.write_batch(mixed)
    await store.close()
    settings = Settings(store_url=pg_dsn)
    assert (await service.verify(settings, site="demo")).ok
    other = next(r for r in mixed if r.site == "other")
    await _sql(settings, "UPDATE consent_records SET action = 'gpc' WHERE record_id = $1",
               other.record_id)  # fmt: skip
    assert (await service.verify(settings, site="demo")).ok
    whole = await service.verify(settings)
    assert whole.first_break is not None and whole.first_break.ref == other.record_id
    mine = next(r for r in mixed if r.site == "demo")
    await _sql(settings, "DELETE FROM audit_chain WHERE ref = $1", mine.record_id)
    report = await service.verify(settings, site="demo")
    assert report.first_break is not None and report.first_break.problem == "missing_links"
