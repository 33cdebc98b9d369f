"""Crash test: load a real server, kill -9 it mid-stream, restart it; every 201 is stored once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.pg import ORIGIN, ROOT, pg_dsn, secret_of, served_version  # noqa: F401
from tests.procs import free_port
from tests.procs import stop as stop_process

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def server_env(data_dir: Path, store_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_BANNERS_DIR": str(ROOT / "banners"),
        "GATEWAY_LOCALES_DIR": str(ROOT / "locales"),
        "GATEWAY_STORE_URL": store_url,
        "GATEWAY_RELOAD": "false",
        "GATEWAY_DURABILITY": "power",
        "GATEWAY_FORWARD_MAX_BACKOFF": "0.2",
        "GATEWAY_NODE_ID": "crash-node",
        "GATEWAY_LOG_LEVEL": "warning",
    }


def start_server(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "gateway.app:factory",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip


async def test_every_acknowledged_record_survives_kill_9(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = server_env(tmp_path / "data", pg_dsn)
    acked: dict[str, str] = {}
    proc = start_server(port, env)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            version = await served_version(client, base)
            stop = asyncio.Event()

            async def writer(worker: int) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    subject = f"crash-{worker}-{n}"
                    body = {
                        "subject_secret": secret_of(subject),
                        "banner_version": version,
                        "action": "reject_all",
                        "choices": {"analytics": False, "marketing": False,
                                    "personalization": False},
                    }  # fmt: skip
                    try:
                        r = await client.post(
                            f"{base}/v1/sites/demo/consents", json=body, headers={"Origin": ORIGIN}
                        )
                    except httpx.TransportError:
                        return  # the server is gone
                    if r.status_code == 201:
                        acked[r.json()["record_id"]] = r.json()["subject_id"]

            writers = [asyncio.create_task(writer(i)) for i in range(24)]
            await asyncio.sleep(1.5)
            os.kill(proc.pid, signal.SIGKILL)  # mid-stream: requests are in flight
            proc.wait(timeout=10)
            stop.set()
            await asyncio.gather(*writers)
        assert len(acked) > 50, "the load did not get going"

        proc = start_server(port, env)  # same data dir: the outbox is replayed
        async with httpx.AsyncClient(timeout=5) as client:
            await served_version(client, base)
            conn = await asyncpg.connect(pg_dsn)
            try:
                deadline = time.monotonic() + 30
                while True:
                    found = await conn.fetchval(
                        "SELECT count(*) FROM consent_records WHERE record_id = ANY($1::uuid[])",
                        list(acked),
                    )
                    if found == len(acked):
                        break
                    assert time.monotonic() < deadline, f"{found} of {len(acked)} delivered"
                    await asyncio.sleep(0.1)
                total = await conn.fetchval("SELECT count(*) FROM consent_records")
                distinct = await conn.fetchval(
                    "SELECT count(DISTINCT (site, subject_id)) FROM consent_records"
                )
                rows = await conn.fetch(
                    "SELECT record_id::text, subject_id FROM consent_records "
                    "WHERE record_id = ANY($1::uuid[])",
                    list(acked),
                )
            finally:
                await conn.close()
        # Exactly once: one row per subject (each subject was posted once), and every
        # acknowledged record holds the subject it was acknowledged for.
        assert total == distinct
        assert {r["record_id"]: r["subject_id"] for r in rows} == acked
    finally:
        stop_process(proc)
