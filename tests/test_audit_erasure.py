"""Erasure against the audit chain, on the real PostgreSQL store: after a rights deletion
blanks a subject's personal data, `audit verify` still verifies the whole history (the
record's digest before erasure is kept, and the erasure is a link of its own), while a
tamper of an erased row, of the kept digest, or an UPDATE dressed up as an erasure is still
found and located (threat: someone with write access edits the legal record after the fact,
and hides it behind an erasure)."""

from __future__ import annotations

import asyncpg
import pytest

from gateway.audit import service
from gateway.core.model import ConsentRecord
from gateway.core.settings import Settings
from gateway.sinks.postgres import PostgresStore
from gateway.sinks.rights_postgres import PostgresRights
from tests.pg import make_record, pg_dsn  # noqa: F401

pytestmark = pytest.mark.postgres

AT = "2026-12-06T10:00:00.000000Z"


@pytest.fixture
async def erased(pg_dsn: str) -> tuple[Settings, list[ConsentRecord], list[str]]:  # noqa: F811
    store = PostgresStore(pg_dsn, pool_size=2)
    await store.open()
    records = [make_record(f"s{i % 3}") for i in range(30)]
    await store.write_batch(records[:20])
    await store.write_batch(records[20:])
    await store.close()
    rights = PostgresRights(pg_dsn)
    await rights.open()
    try:
        done = await rights.erase("demo", ["s1"], "req-1", AT)
        again = await rights.erase("demo", ["s1"], "req-2", AT)  # nothing left to erase
    finally:
        await rights.close()
    gone = [r.record_id for r in records if r.subject_id == "s1"]
    assert done.records == len(gone) == 10 and again.records == 0
    return Settings(store_url=pg_dsn, audit_key="k" * 32), records, gone


async def _sql(settings: Settings, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.store_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def test_an_erased_history_still_verifies(
    erased: tuple[Settings, list[ConsentRecord], list[str]],
) -> None:
    settings, records, gone = erased
    rows = await _sql(
        settings,
        "SELECT count(*) AS n FROM consent_records WHERE subject_id = 's1' AND "
        "(ip_truncated IS NOT NULL OR user_agent <> '' OR page_url <> '')",
    )
    assert rows[0]["n"] == 0  # the personal data is gone
    report = await service.verify(settings)
    assert report.ok, report.as_json()
    assert report.checked == len(records) + len(gone)  # one erasure link per erased record
    kinds = await _sql(settings, "SELECT kind, count(*) AS n FROM audit_chain GROUP BY kind")
    assert {r["kind"]: r["n"] for r in kinds} == {"consent": 30, "erasure": 10}
    assert (await service.verify(settings, site="demo")).ok
    proof = await service.proof(settings, "demo", "s1")
    assert proof["verified"] and len(proof["records"]) == 10


async def test_a_tampered_erased_record_is_located(
    erased: tuple[Settings, list[ConsentRecord], list[str]],
) -> None:
    settings, _records, gone = erased
    await _sql(
        settings, "UPDATE consent_records SET action = 'accept_all' WHERE record_id = $1", gone[3]
    )
    report = await service.verify(settings)
    assert not report.ok and report.first_break is not None
    assert (report.first_break.problem, report.first_break.ref) == ("changed", gone[3])
    assert [p.ref for p in report.problems] == [gone[3]]


async def test_a_changed_kept_digest_is_located(
    erased: tuple[Settings, list[ConsentRecord], list[str]],
) -> None:
    settings, _records, gone = erased
    await _sql(
        settings, "UPDATE audit_erasures SET digest = sha256('x'::bytea) WHERE ref = $1", gone[0]
    )
    report = await service.verify(settings)
    assert not report.ok and report.first_break is not None
    assert report.first_break.problem == "changed" and report.first_break.ref == gone[0]
    # Both the record's link and its erasure link no longer hold.
    assert [p.ref for p in report.problems] == [gone[0], gone[0]]


async def test_a_tamper_dressed_as_an_erasure_is_located(
    erased: tuple[Settings, list[ConsentRecord], list[str]],
) -> None:
    """Blanking the personal fields while changing a choice is no erasure: no kept digest,
    no erasure link, and the record's link breaks."""
    settings, records, _gone = erased
    victim = next(r.record_id for r in records if r.subject_id == "s2")
    await _sql(
        settings,
        "UPDATE consent_records SET ip_truncated = NULL, user_agent = '', page_url = '', "
        "idempotency_key = NULL, action = 'reject_all' WHERE record_id = $1",
        victim,
    )
    report = await service.verify(settings)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.ref) == ("changed", victim)
    assert not await _sql(settings, "SELECT 1 FROM audit_erasures WHERE ref = $1", victim)


async def test_a_removed_erased_record_is_located(
    erased: tuple[Settings, list[ConsentRecord], list[str]],
) -> None:
    settings, _records, gone = erased
    await _sql(settings, "DELETE FROM consent_records WHERE record_id = $1", gone[5])
    report = await service.verify(settings)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.ref) == ("removed", gone[5])
