"""`consent-gateway store retention`: whole expired months go, never what the period still
needs (each subject's latest state, records inside the period, the audit chain), and
`audit verify` passes after it and still catches tampering (threat: retention used to hide
an edit, or an edit made to what retention kept)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest

from gateway.audit import retention, service
from gateway.cli.main import main
from gateway.core.errors import BadRequest
from gateway.core.model import ConsentRecord
from gateway.core.settings import Settings
from gateway.sinks.postgres import PostgresStore
from tests.pg import make_record, pg_dsn, scratch_database  # noqa: F401

pytestmark = pytest.mark.postgres

KEY = "k" * 32
CUTOFF = datetime(2025, 4, 15, tzinfo=UTC)  # months up to 2025-03 have expired


def at(month: str, day: int = 10) -> str:
    return f"{month}-{day:02d}T12:00:00.000000Z"


@dataclass
class Store:
    settings: Settings
    store: PostgresStore
    r: dict[str, ConsentRecord]


async def _fill(store: PostgresStore) -> dict[str, ConsentRecord]:
    """Two nodes; subject b's latest state is in an expired month; node n2 delivers a
    record of January after one of May (an outbox replayed late)."""
    plan = [
        ("a1", "a", "2025-01", "n1"), ("b1", "b", "2025-01", "n1"), ("c1", "c", "2025-01", "n2"),
        ("a2", "a", "2025-02", "n1"), ("c2", "c", "2025-02", "n2"), ("b2", "b", "2025-03", "n1"),
        ("a3", "a", "2025-05", "n1"), ("c3", "c", "2025-05", "n2"), ("e1", "e", "2025-01", "n2"),
        ("e2", "e", "2025-06", "n2"),
    ]  # fmt: skip
    made = {}
    for name, subject, month, node in plan:
        made[name] = make_record(subject, recorded_at=at(month), node_id=node)
        await store.write_batch([made[name]])  # one batch each: chained in this order
    return made


@pytest.fixture
async def filled(pg_dsn: str) -> AsyncIterator[Store]:  # noqa: F811
    store = PostgresStore(pg_dsn, pool_size=2)
    await store.open()
    made = await _fill(store)
    yield Store(Settings(store_url=pg_dsn, audit_key=KEY), store, made)
    await store.close()


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _ids(dsn: str) -> set[str]:
    return {r[0] for r in await _fetch(dsn, "SELECT record_id::text FROM consent_records")}


async def _current(s: Store) -> dict[str, str]:
    out = {}
    for subject in "abce":
        out[subject] = (await s.store.subject_history("demo", subject))["current"]["record_id"]
    return out


async def test_retention_drops_expired_months_and_keeps_what_is_needed(filled: Store) -> None:
    s, r = filled, filled.r
    dsn = s.settings.store_url
    before = await _current(s)
    report = await retention.retention(s.settings, CUTOFF, dry_run=False)
    out = report.as_json()
    assert [p["partition"] for p in out["dropped_partitions"]] == [
        "consent_records_p202501", "consent_records_p202502", "consent_records_p202503"
    ]  # fmt: skip
    # Kept: b's latest state (March), and e1, whose link follows a live one of node n2.
    assert await _ids(dsn) == {r[n].record_id for n in ("b2", "e1", "a3", "c3", "e2")}
    assert out["records_kept"] == 2 and out["records_dropped"] == 5
    assert await _current(s) == before  # every subject's latest state is still there
    retained = await _fetch(dsn, "SELECT record_id::text FROM consent_records_retained")
    assert {x[0] for x in retained} == {r["b2"].record_id, r["e1"].record_id}
    verified = await service.verify(s.settings)
    assert verified.ok, verified.as_json()
    assert verified.checked == 5  # the links of the kept records, retired or not
    # The store goes on: new records chain on, a late one of a dropped month is kept.
    await s.store.write_batch([make_record("a", recorded_at=at("2025-07"), node_id="n1")])
    await s.store.write_batch([make_record("f", recorded_at=at("2025-02"), node_id="n2")])
    verified = await service.verify(s.settings)
    assert verified.ok, verified.as_json()
    # A second retention on top of the first.
    second = await retention.retention(s.settings, datetime(2025, 6, 1, tzinfo=UTC), dry_run=False)
    assert [p["partition"] for p in second.dropped] == ["consent_records_p202505"]
    assert (await service.verify(s.settings)).ok
    assert await _current(s) == {**before, "a": (await _current(s))["a"]}


async def test_a_dry_run_changes_nothing(filled: Store) -> None:
    dsn = filled.settings.store_url
    ids = await _ids(dsn)
    report = await retention.retention(filled.settings, CUTOFF, dry_run=True)
    assert len(report.dropped) == 3 and report.kept == 2
    assert await _ids(dsn) == ids
    assert await _fetch(dsn, "SELECT * FROM consent_retention") == []
    assert (await service.verify(filled.settings)).ok


async def test_retention_without_an_audit_key_is_refused(filled: Store) -> None:
    with pytest.raises(BadRequest) as info:
        await retention.retention(filled.settings.replace(audit_key=""), CUTOFF, dry_run=False)
    assert info.value.code == "missing_audit_key"


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        ("UPDATE consent_records SET action = 'gpc' WHERE record_id = '{b2}'", "changed"),
        ("UPDATE consent_records SET action = 'gpc' WHERE record_id = '{a3}'", "changed"),
        ("DELETE FROM consent_records WHERE record_id = '{e1}'", "removed"),
        ("DELETE FROM audit_chain WHERE ref = '{b2}'", "retired_mismatch"),
        ("UPDATE consent_retention SET bases = bases - 'n2'", "checkpoint_forged"),
        ("DELETE FROM consent_retention", "missing_links"),
    ],
    ids=[
        "kept retired record",
        "live record",
        "kept late record",
        "kept retired link",
        "retention checkpoint",
        "retention checkpoint removed",
    ],
)
async def test_tampering_after_retention_is_detected(
    filled: Store, tamper: str, problem: str
) -> None:
    await retention.retention(filled.settings, CUTOFF, dry_run=False)
    sql = tamper.format(**{k: v.record_id for k, v in filled.r.items()})
    conn = await asyncpg.connect(filled.settings.store_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
    report = await service.verify(filled.settings)
    assert not report.ok
    assert problem in {p.problem for p in report.problems}, report.as_json()


def test_the_command_reports_and_drops() -> None:
    async def setup(dsn: str) -> None:
        store = PostgresStore(dsn, pool_size=1)
        await store.open()
        await _fill(store)
        await store.close()

    async def run() -> None:
        async with scratch_database() as name:
            dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
            await setup(dsn)
            flags = ["--store-url", dsn, "--audit-key", KEY, "--older-than", "2025-04-15"]
            assert await asyncio.to_thread(main, ["store", "retention", *flags, "--dry-run"]) == 0
            assert len(await _ids(dsn)) == 10
            assert await asyncio.to_thread(main, ["store", "retention", *flags]) == 0
            assert len(await _ids(dsn)) == 5
            assert await asyncio.to_thread(main, ["audit", "verify", "--store-url", dsn,
                                                  "--audit-key", KEY]) == 0  # fmt: skip

    asyncio.run(run())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("400d", datetime(2025, 11, 26, 12, tzinfo=UTC)),
        ("13m", datetime(2025, 11, 28, 12, tzinfo=UTC)),  # the 31st moves to the 28th
        ("2y", datetime(2024, 12, 28, 12, tzinfo=UTC)),
        ("2025-04-01", datetime(2025, 4, 1, tzinfo=UTC)),
    ],
)
def test_older_than_names_a_cutoff(text: str, expected: datetime) -> None:
    now = datetime(2026, 12, 31, 12, tzinfo=UTC)
    assert retention.cutoff_for(text, now) == expected


@pytest.mark.parametrize("text", ["", "13", "-5d", "13w", "1e3d", "2025-13-01", "x" * 1000])
def test_a_malformed_period_is_refused(text: str) -> None:
    """Threat: a typo in a cron line must not turn into a cutoff of now (dropping everything)."""
    with pytest.raises(BadRequest) as info:
        retention.cutoff_for(text)
    assert info.value.code == "invalid_period"


async def test_a_cutoff_in_the_future_is_refused(filled: Store) -> None:
    """Threat: a mistyped year (2062 for 2026) would expire every month there is."""
    with pytest.raises(BadRequest) as info:
        await retention.retention(filled.settings, datetime(2062, 1, 1, tzinfo=UTC), dry_run=True)
    assert info.value.code == "invalid_period"


async def test_records_erased_since_stay_with_their_erasure_links(filled: Store) -> None:
    """A deletion request blanked records of expired months after newer records were linked:
    their erasure links are not retired, so the records stay and the chain still verifies."""
    r, dsn = filled.r, filled.settings.store_url
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "UPDATE consent_records SET ip_truncated = NULL, user_agent = '', page_url = '', "
            "idempotency_key = NULL WHERE record_id = ANY($1::uuid[])",
            [r["a1"].record_id, r["c2"].record_id],
        )
        erasures = await conn.fetchval("SELECT count(*) FROM audit_chain WHERE kind = 'erasure'")
    finally:
        await conn.close()
    assert erasures == 2
    report = await retention.retention(filled.settings, CUTOFF, dry_run=False)
    assert report.kept == 4
    assert {r["a1"].record_id, r["c2"].record_id} <= await _ids(dsn)
    verified = await service.verify(filled.settings)
    assert verified.ok, verified.as_json()
