"""The TC and GPP strings a record carries, in the PostgreSQL store's exports and proof packs."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.sinks.postgres import PostgresStore
from gateway.standards import gpp, tcf
from gateway.standards.tcf_model import TCModel
from tests.helpers import make_settings
from tests.pg import make_record, pg_dsn  # noqa: F401

pytestmark = pytest.mark.postgres

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TC = tcf.encode(TCModel(cmp_id=300, cmp_version=1, vendor_list_version=130, created=17_650_000_000,
                        last_updated=17_650_000_000, purpose_consents=(1, 8, 9),
                        vendors_disclosed=(28, 755)))  # fmt: skip
GPP = gpp.encode({"tcfeuv2": gpp.decode("DBABMA~" + TC)["tcfeuv2"]})


async def test_exports_and_proof_packs_carry_the_strings(pg_dsn: str, tmp_path: Path) -> None:  # noqa: F811
    store = PostgresStore(pg_dsn, pool_size=1)
    await store.open()
    record = make_record("subj-tcf", signals={"tc_string": TC, "gpp_string": GPP})
    await store.write_batch([record])
    await store.publish_version(
        "demo", "v-test-1", "rev-test-1", {"en": {"texts": {}, "purposes": {}}}
    )
    await store.close()
    settings = make_settings(tmp_path, store_url=pg_dsn, admin_token=TOKEN)
    with TestClient(create_app(settings)) as client:
        pack = client.get("/admin/v1/sites/demo/subjects/subj-tcf/proof", headers=AUTH).json()
        item = pack["records"][0]
        assert item["record"]["signals"] == {"tc_string": TC, "gpp_string": GPP}
        assert item["iab"]["tc_string"]["cmpId"] == 300
        assert item["iab"]["tc_string"]["purposeConsents"] == [1, 8, 9]
        assert item["iab"]["gpp_string"]["header"]["SectionIds"] == [2]
        lines = client.get(
            "/admin/v1/sites/demo/export?format=jsonl", headers=AUTH
        ).text.splitlines()
        records = [orjson.loads(x) for x in lines if '"type":"record"' in x]
        assert records[0]["signals"]["tc_string"] == TC
        table = list(csv.DictReader(io.StringIO(
            client.get("/admin/v1/sites/demo/export?format=csv", headers=AUTH).text)))  # fmt: skip
        assert orjson.loads(table[0]["signals"])["gpp_string"] == GPP
