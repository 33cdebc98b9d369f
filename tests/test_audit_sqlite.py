"""The audit trail on the embedded SQLite store (GATEWAY_STORE_URL empty): `audit verify`
locates a changed, removed or inserted record (threat: someone with write access to the data
dir edits the legal record), erasure keeps the history verifiable, and exports, proof packs
and reports answer through the admin API with figures equal to a brute-force count over the
same records."""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from gateway.audit import service
from gateway.core.settings import Settings
from gateway.sinks.directory_sqlite import SqliteDirectory
from gateway.sinks.rights_sqlite import SqliteRights
from gateway.sinks.sqlite import FILE_NAME, SqliteStore
from tests.helpers import make_settings
from tests.test_audit_api import TEXTS, day_region_report, varied

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Settings, list[Any]]:
    settings = make_settings(tmp_path, admin_token=TOKEN, audit_key="k" * 32)
    records = varied(600)

    async def write() -> None:
        store = SqliteStore(settings.data_dir / FILE_NAME)
        await store.open()
        for start in range(0, len(records), 200):
            await store.write_batch(records[start : start + 200])
        await store.write_batch(records[100:300])  # redelivered after a lost ack: no-op
        await store.publish_version("demo", "v1", "r1", TEXTS)
        await store.publish_version("demo", "v2", "r2", TEXTS)
        await store.close()

    asyncio.run(write())
    return settings, records


def _sql(settings: Settings, sql: str, *args: Any) -> list[Any]:
    conn = sqlite3.connect(settings.data_dir / FILE_NAME, isolation_level=None)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _verify(settings: Settings, **kw: Any) -> service.VerifyReport:
    return asyncio.run(service.verify(settings, **kw))


def test_an_untouched_chain_verifies_and_checkpoints(stored: tuple[Settings, list[Any]]) -> None:
    settings, records = stored
    report = _verify(settings)
    assert report.ok, report.as_json()
    assert report.checked == len(records) == 600
    assert _sql(settings, "SELECT seq FROM audit_heads") == [(600,)]
    checkpoint = asyncio.run(service.checkpoint(settings))
    assert checkpoint["heads"]["test-node"][0] == 600
    again = _verify(settings)
    assert again.ok and again.checkpoints == 1
    assert _verify(settings, site="demo").ok


def test_a_changed_record_is_located(stored: tuple[Settings, list[Any]]) -> None:
    settings, records = stored
    victim = records[123].record_id
    _sql(settings, "UPDATE consent_records SET body = json_set(body, '$.action', 'accept_all') "
                   "WHERE record_id = ?", victim)  # fmt: skip
    if records[123].action == "accept_all":
        _sql(settings, "UPDATE consent_records SET body = json_set(body, '$.language', 'xx') "
                       "WHERE record_id = ?", victim)  # fmt: skip
    report = _verify(settings)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.ref) == ("changed", victim)


def test_a_removed_and_an_inserted_record_are_located(stored: tuple[Settings, list[Any]]) -> None:
    settings, records = stored
    gone = records[7].record_id
    (body,) = _sql(settings, "SELECT body FROM consent_records WHERE record_id = ?", gone)[0]
    _sql(settings, "DELETE FROM consent_records WHERE record_id = ?", gone)
    report = _verify(settings)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.ref) == ("removed", gone)
    forged = orjson.loads(body) | {"record_id": "00000000-0000-7000-8000-000000000001"}
    _sql(settings, "INSERT INTO consent_records (site, subject_id, recorded_at, record_id, body) "
                   "VALUES ('demo', ?, ?, ?, ?)", forged["subject_id"], forged["recorded_at"],
         forged["record_id"], orjson.dumps(forged).decode())  # fmt: skip
    problems = {(p.problem, p.ref) for p in _verify(settings).problems}
    assert ("unlinked", forged["record_id"]) in problems


def test_erasure_keeps_the_history_verifiable_but_not_a_tamper(
    stored: tuple[Settings, list[Any]],
) -> None:
    settings, records = stored
    subject = records[0].subject_id
    mine = [r.record_id for r in records if r.subject_id == subject]

    async def erase() -> int:
        directory = SqliteDirectory(settings.data_dir / FILE_NAME)  # the identity tables
        await directory.open()
        rights = SqliteRights(settings.data_dir / FILE_NAME)
        await rights.open()
        try:
            return (await rights.erase("demo", [subject], "req-1", "2026-12-06T10:00:00Z")).records
        finally:
            await rights.close()
            await directory.close()

    assert asyncio.run(erase()) == len(mine) == 15
    leftover = _sql(settings, "SELECT count(*) FROM consent_records WHERE subject_id = ? AND "
                              "json_extract(body, '$.user_agent') != ''", subject)  # fmt: skip
    assert leftover == [(0,)]
    report = _verify(settings)
    assert report.ok, report.as_json()
    proof = asyncio.run(service.proof(settings, "demo", subject))
    assert proof["verified"] and len(proof["records"]) == 15
    _sql(settings, "UPDATE consent_records SET body = json_set(body, '$.channel', 'forged') "
                   "WHERE record_id = ?", mine[2])  # fmt: skip
    _sql(settings, "UPDATE audit_chain SET personal_digest = zeroblob(32) WHERE ref = ?", mine[4])
    located = [(p.problem, p.ref) for p in _verify(settings).problems]
    assert located == sorted([("changed", mine[2]), ("changed", mine[4])],
                             key=lambda p: [r.record_id for r in records].index(p[1]))  # fmt: skip


@pytest.fixture
def client(stored: tuple[Settings, list[Any]]) -> Iterator[TestClient]:
    from gateway.app import create_app

    with TestClient(create_app(stored[0])) as c:
        yield c


def test_report_figures_equal_a_brute_force_count(
    client: TestClient, stored: tuple[Settings, list[Any]]
) -> None:
    settings, _ = stored
    report, cols, got = day_region_report(client)
    brute = _sql(
        settings,
        "SELECT substr(recorded_at, 1, 10), coalesce(json_extract(body, '$.region_country') || "
        "coalesce('-' || json_extract(body, '$.region_subdivision'), ''), ''), "
        "json_extract(body, '$.action'), count(*) FROM consent_records WHERE site = 'demo' "
        "GROUP BY 1, 2, 3",
    )
    assert {k: v for k, v in got.items() if v} == dict(
        Counter({(d, g, a): n for d, g, a, n in brute})
    )
    assert sum(r[cols.index("total")] for r in report["rows"]) == 600
    assert {c["region"] for c in report["changes"]} == {"DE", "FR", "US"}


def test_purpose_grant_rates_equal_a_brute_force_count(
    client: TestClient, stored: tuple[Settings, list[Any]]
) -> None:
    settings, _ = stored
    response = client.get(
        "/admin/v1/sites/demo/reports/consents?group=banner_version,purpose&format=csv",
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    table = list(csv.DictReader(io.StringIO(response.text)))
    got = {
        (r["banner_version"], r["purpose"]): (int(r["granted"]), int(r["records"])) for r in table
    }
    brute = _sql(
        settings,
        "SELECT json_extract(body, '$.banner_version'), p.key, sum(p.type = 'true'), count(*) "
        "FROM consent_records, json_each(body, '$.choices') p GROUP BY 1, 2",
    )
    assert got == {(v, p): (g, n) for v, p, g, n in brute}


def test_exports_and_rights_report_on_the_embedded_store(
    client: TestClient, stored: tuple[Settings, list[Any]]
) -> None:
    _, records = stored
    with client.stream("GET", "/admin/v1/sites/demo/export?format=csv&region=DE",
                       headers=AUTH) as response:  # fmt: skip
        assert response.status_code == 200
        rows = list(csv.DictReader(io.StringIO(response.read().decode())))
    assert [r["record_id"] for r in rows] == [
        r.record_id for r in records if r.region_country == "DE"
    ]
    assert rows[0].keys() >= {"record_id", "recorded_at", "action", "banner_version"}
    with client.stream("GET", "/admin/v1/sites/demo/export?format=jsonl", headers=AUTH) as r:
        lines = [orjson.loads(line) for line in r.read().splitlines()]
    assert [x["banner_version"] for x in lines if x["type"] == "banner_version"] == ["v1", "v2"]
    assert sum(x["type"] == "record" for x in lines) == 600
    rights = client.get("/admin/v1/sites/demo/reports/rights?year=2026", headers=AUTH)
    assert rights.status_code == 200, rights.text
    verify = client.get("/admin/v1/sites/demo/audit/verify", headers=AUTH).json()
    assert verify["ok"] is True and verify["checked"] == 600


def test_impressions_are_flushed_to_the_embedded_store(
    client: TestClient, stored: tuple[Settings, list[Any]]
) -> None:
    settings, _ = stored
    for _ in range(3):
        assert client.get("/v1/sites/demo/consent.js?region=DE&lang=de").status_code == 200
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    client.portal.call(service.flush_impressions, settings, gateway.impressions)  # type: ignore[union-attr]
    assert _sql(settings, "SELECT region, sum(n) FROM banner_impressions GROUP BY region") == [
        ("DE", 3)
    ]
    report = client.get("/admin/v1/sites/demo/reports/consents?group=region", headers=AUTH).json()
    assert report["columns"][-2:] == ["impressions", "opt_in_rate"]


def test_a_store_from_before_the_audit_trail_is_linked_when_opened(
    stored: tuple[Settings, list[Any]],
) -> None:
    """A version 2 store (records, no chain): opening it links and counts every record."""
    settings, records = stored
    for table in ("audit_chain", "audit_heads", "consent_rollup", "consent_purpose_rollup"):
        _sql(settings, f"DROP TABLE {table}")
    _sql(settings, "UPDATE schema_version SET version = 2")

    async def reopen() -> None:
        store = SqliteStore(settings.data_dir / FILE_NAME)
        await store.open()
        await store.close()

    asyncio.run(reopen())
    report = _verify(settings)
    assert report.ok and report.checked == len(records), report.as_json()
    assert _sql(settings, "SELECT sum(n) FROM consent_rollup") == [(len(records),)]
    assert _sql(settings, "SELECT version FROM schema_version") == [(4,)]
