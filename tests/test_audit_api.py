"""Exports, proof packs and consent reports over the real PostgreSQL store, through the
admin API: figures equal a brute-force count over the same records; hostile parameters get
precise 4xx answers; every call needs the admin token (threat: anyone reading the legal
record or its personal data)."""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
import pytest
from starlette.testclient import TestClient

from gateway.core.model import ACTIONS, ConsentRecord
from gateway.sinks.postgres import PostgresStore
from tests.helpers import make_settings
from tests.pg import make_record, pg_dsn  # noqa: F401

pytestmark = pytest.mark.postgres

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEXTS = {"en": {"texts": {"opt_in": {"title": "We use <b>cookies</b>"}}, "purposes": {}}}


def varied(n: int, seed: int = 7) -> list[ConsentRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        day = 1 + i * 5 // n  # five days, in order
        out.append(
            make_record(
                f"subj-{i % 40}",
                recorded_at=f"2026-03-0{day}T10:00:{i % 60:02d}.{i:06d}Z",
                action=rng.choice(ACTIONS),
                banner_version="v1" if day < 3 else "v2",
                region_country=rng.choice(["DE", "FR", "US"]),
                region_subdivision=None,
                language=rng.choice(["en", "de"]),
                analytics=rng.random() < 0.4,
                user_agent='=HYPERLINK("http://evil")' if i == 3 else "pytest",
            )
        )
    return sorted(out, key=lambda r: (r.recorded_at, r.record_id))


@pytest.fixture
async def store_url(pg_dsn: str) -> str:  # noqa: F811
    store = PostgresStore(pg_dsn, pool_size=2)
    await store.open()
    records = varied(600)
    for start in range(0, len(records), 200):
        await store.write_batch(records[start : start + 200])
    await store.publish_version("demo", "v1", "r1", TEXTS)
    await store.publish_version("demo", "v2", "r2", TEXTS)
    await store.close()
    return pg_dsn


@pytest.fixture
def client(store_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, store_url=store_url, admin_token=TOKEN)
    from gateway.app import create_app

    with TestClient(create_app(settings)) as c:
        yield c


async def _brute(store_url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(store_url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def test_report_figures_equal_a_brute_force_count(client: TestClient, store_url: str) -> None:
    response = client.get(
        "/admin/v1/sites/demo/reports/consents?group=day,region&from=2026-03-01&to=2026-03-31",
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    report = response.json()
    cols = report["columns"]
    got = {(r[0], r[1], a): r[cols.index(a)] for r in report["rows"] for a in ACTIONS}
    brute = await _brute(
        store_url,
        "SELECT (recorded_at AT TIME ZONE 'UTC')::date::text AS day, "
        "coalesce(region_country || coalesce('-' || region_subdivision, ''), '') AS region, "
        "action, count(*) AS n FROM consent_records WHERE site = 'demo' GROUP BY 1, 2, 3",
    )
    expected = Counter({(r["day"], r["region"], r["action"]): r["n"] for r in brute})
    assert {k: v for k, v in got.items() if v} == dict(expected)
    assert sum(r[cols.index("total")] for r in report["rows"]) == 600
    first = report["rows"][0]
    total = first[cols.index("total")]
    assert first[cols.index("accept_all_rate")] == round(first[cols.index("accept_all")] / total, 6)
    # A banner version change in each region is tested, with the numbers behind any flag.
    assert {c["region"] for c in report["changes"]} == {"DE", "FR", "US"}
    assert all({"z", "p_value", "before", "after"} <= c.keys() for c in report["changes"])


async def test_purpose_grant_rates_equal_a_brute_force_count(
    client: TestClient, store_url: str
) -> None:
    response = client.get(
        "/admin/v1/sites/demo/reports/consents?group=banner_version,purpose&format=csv",
        headers=AUTH,
    )
    assert response.status_code == 200
    table = list(csv.DictReader(io.StringIO(response.text)))
    got = {(r["banner_version"], r["purpose"]): int(r["granted"]) for r in table}
    brute = await _brute(
        store_url,
        "SELECT banner_version, p.key AS purpose, count(*) FILTER (WHERE p.value = 'true') AS g "
        "FROM consent_records, jsonb_each(choices) p GROUP BY 1, 2",
    )
    assert got == {(r["banner_version"], r["purpose"]): r["g"] for r in brute}


def test_export_streams_every_matching_record_with_the_texts(client: TestClient) -> None:
    with client.stream(
        "GET", "/admin/v1/sites/demo/export?format=jsonl&region=DE&from=2026-03-02", headers=AUTH
    ) as response:
        assert response.status_code == 200
        lines = [orjson.loads(line) for line in response.iter_lines() if line]
    versions = [x for x in lines if x["type"] == "banner_version"]
    records = [x for x in lines if x["type"] == "record"]
    assert {v["banner_version"] for v in versions} == {r["banner_version"] for r in records}
    assert versions[0]["texts"] == TEXTS
    assert records and all(r["region_country"] == "DE" for r in records)
    assert all(r["recorded_at"] >= "2026-03-02" for r in records)
    # Each version's texts come before the first record that references it.
    seen: set[str] = set()
    for line in lines:
        if line["type"] == "banner_version":
            seen.add(line["banner_version"])
        else:
            assert line["banner_version"] in seen


def test_csv_export_neutralises_spreadsheet_formulas(client: TestClient) -> None:
    """Threat: a visitor's user agent that a spreadsheet would run as a formula."""
    response = client.get("/admin/v1/sites/demo/export?format=csv", headers=AUTH)
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert len(table) == 600
    assert any(r["user_agent"] == '\'=HYPERLINK("http://evil")' for r in table)
    assert not any(r["user_agent"].startswith("=") for r in table)


def test_proof_pack_as_json_and_escaped_html(client: TestClient) -> None:
    pack = client.get("/admin/v1/sites/demo/subjects/subj-3/proof", headers=AUTH).json()
    assert pack["verified"] is True
    assert len(pack["records"]) == 15
    assert all(item["chain"]["content_matches"] for item in pack["records"])
    assert set(pack["banner_versions"]) <= {"v1", "v2"}
    page = client.get(
        "/admin/v1/sites/demo/subjects/subj-3/proof", headers={**AUTH, "Accept": "text/html"}
    )
    assert page.headers["content-type"].startswith("text/html")
    assert "We use &lt;b&gt;cookies&lt;/b&gt;" in page.text  # stored text, never markup
    assert "<b>cookies</b>" not in page.text


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/admin/v1/sites/demo/export?format=xml", 400, "invalid_parameter"),
        ("/admin/v1/sites/demo/export?from=yesterday", 400, "invalid_parameter"),
        ("/admin/v1/sites/demo/export?region=DE';--", 400, "invalid_parameter"),
        ("/admin/v1/sites/demo/reports/consents?group=day;drop", 400, "invalid_parameter"),
        ("/admin/v1/sites/demo/reports/consents?group=" + "day," * 100, 400, "invalid_parameter"),
        ("/admin/v1/sites/demo/reports/consents?to=2026-13-01", 400, "invalid_parameter"),
        ("/admin/v1/sites/nope/export", 404, "unknown_site"),
        ("/admin/v1/sites/demo/subjects/nobody/proof", 404, "unknown_subject"),
        ("/admin/v1/sites/demo/subjects/" + "x" * 200 + "/proof", 400, "invalid_parameter"),
    ],
)
def test_hostile_parameters_get_precise_errors(
    client: TestClient, path: str, status: int, error: str
) -> None:
    response = client.get(path, headers=AUTH)
    assert (response.status_code, response.json()["error"]) == (status, error)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/v1/sites/demo/export",
        "/admin/v1/sites/demo/subjects/subj-3/proof",
        "/admin/v1/sites/demo/reports/consents",
        "/admin/v1/sites/demo/audit/verify",
    ],
)
def test_every_audit_call_needs_the_admin_token(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_verify_over_http(client: TestClient) -> None:
    report = client.get("/admin/v1/sites/demo/audit/verify", headers=AUTH).json()
    assert report["ok"] is True and report["checked"] == 600


def test_the_embedded_store_answers_too(tmp_path: Path) -> None:
    """The embedded SQLite store keeps the audit trail as well (tests/test_audit_sqlite.py)."""
    from gateway.app import create_app

    with TestClient(create_app(make_settings(tmp_path, admin_token=TOKEN))) as c:
        response = c.get("/admin/v1/sites/demo/reports/consents", headers=AUTH)
        verify = c.get("/admin/v1/sites/demo/audit/verify", headers=AUTH)
    assert (response.status_code, response.json()["rows"]) == (200, [])
    assert verify.status_code == 200 and verify.json()["ok"] is True


def test_rights_report_reads_the_rights_tables(client: TestClient) -> None:
    bad = client.get("/admin/v1/sites/demo/reports/rights?year=26", headers=AUTH)
    assert (bad.status_code, bad.json()["field"]) == (400, "year")
    response = client.get("/admin/v1/sites/demo/reports/rights?year=2026", headers=AUTH)
    assert response.status_code == 200, response.text


async def test_impressions_are_counted_where_served_and_flushed(
    client: TestClient, store_url: str
) -> None:
    """No request per view and no personal data: the keys hold only validated values."""
    from gateway.audit import service

    for _ in range(3):
        assert client.get("/v1/sites/demo/consent.js?region=DE&lang=de").status_code == 200
    assert client.get("/v1/sites/demo/config?region=FR").status_code == 200
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    counted = dict(gateway.impressions.counts)
    assert sum(counted.values()) == 4
    version = gateway.catalog.get("demo").banner_version
    assert {(k[0], k[1], k[3], k[4], k[5]) for k in counted} == {
        ("demo", version, "DE", "de", "web"),
        ("demo", version, "FR", "en", "app"),
    }
    settings = client.app.state.settings  # type: ignore[attr-defined]
    await service.flush_impressions(settings, gateway.impressions)
    assert gateway.impressions.counts == {}
    report = client.get(
        "/admin/v1/sites/demo/reports/consents?group=banner_version,region", headers=AUTH
    ).json()
    assert report["columns"][-2:] == ["impressions", "opt_in_rate"]
    brute = await _brute(
        store_url, "SELECT region, sum(n) AS n FROM banner_impressions GROUP BY region"
    )
    assert {r["region"]: r["n"] for r in brute} == {"DE": 3, "FR": 1}


def test_impression_keys_are_bounded() -> None:
    """Threat: an outsider minting keys to grow the counter without bound."""
    from gateway.core.impressions import Impressions

    impressions = Impressions(max_keys=2)
    for i in range(5):
        impressions.count(("demo", "v", "r", f"R{i}", "en", "web"))
    assert len(impressions.counts) == 2 and impressions.dropped == 3
