"""Outage test: PostgreSQL becomes unreachable, recording goes on, the backlog drains once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn

from gateway.app import create_app
from gateway.core.settings import Settings
from tests.helpers import OPS, OPS_TOKEN
from tests.pg import ORIGIN, ROOT, TcpProxy, eventually, pg_dsn, secret_of  # noqa: F401
from tests.procs import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


async def test_backlog_drains_without_loss_or_duplicates(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811
) -> None:
    proxy = TcpProxy(5432)
    await proxy.start()
    behind_proxy = pg_dsn.replace(":5432/", f":{proxy.port}/")
    settings = Settings(
        banners_dir=ROOT / "banners",
        locales_dir=ROOT / "locales",
        data_dir=tmp_path / "data",
        store_url=behind_proxy,
        reload=False,
        node_id="outage-node",
        forward_max_backoff=0.2,
        shutdown_drain=2,
        ops_token=OPS_TOKEN,
        client_writes_per_minute=0,  # 240 writes from one test client, faster than any visitor
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    conn = await asyncpg.connect(pg_dsn)  # direct, not through the proxy
    try:
        await eventually(lambda: server.started)
        recording = app.state.recording
        async with httpx.AsyncClient(timeout=5) as client:
            version = (await client.get(f"{base}/v1/sites/demo/config")).json()["banner_version"]

            async def post(subject: str) -> str:
                body = {"subject_secret": secret_of(subject), "banner_version": version,
                        "action": "accept_all", "choices": {"analytics": True, "marketing": True,
                                    "personalization": True}}  # fmt: skip
                r = await client.post(
                    f"{base}/v1/sites/demo/consents", json=body, headers={"Origin": ORIGIN}
                )
                assert r.status_code == 201, r.text
                record_id: str = r.json()["record_id"]
                return record_id

            before = await asyncio.gather(*(post(f"before-{i}") for i in range(40)))
            await eventually(lambda: recording.outbox.depth == 0)

            await proxy.stop()  # PostgreSQL is now unreachable for the gateway
            during = await asyncio.gather(*(post(f"during-{i}") for i in range(200)))
            await asyncio.sleep(0.5)  # the forwarder retries, with backoff, and fails
            assert recording.outbox.depth == 200
            health = (await client.get(f"{base}/readyz", headers=OPS)).json()["recording"]
            assert health["outbox_depth"] == 200
            assert health["forwarder_last_error"]
            assert await conn.fetchval("SELECT count(*) FROM consent_records") == 40

            await proxy.start()  # restored, same address
            started = time.monotonic()
            await eventually(lambda: recording.outbox.depth == 0, within=15)
            drained_in = time.monotonic() - started
        ids = await conn.fetch("SELECT record_id::text AS id FROM consent_records")
        stored = [r["id"] for r in ids]
        assert sorted(stored) == sorted(before + during)  # nothing lost, nothing twice
        latest = await conn.fetchval("SELECT count(*) FROM consent_latest")
        assert latest == 240
        assert drained_in < 5
    finally:
        await conn.close()
        server.should_exit = True
        await serving
        await proxy.stop()
