"""Exactly once in effect on NATS JetStream: a real gateway under load, NATS killed and
restarted, then the gateway killed with SIGKILL and restarted; every acknowledged record is
in the stream, and no record id is in it twice (Nats-Msg-Id dedupe of the redeliveries)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson
import pytest

from tests.natsd import AckDelayProxy, NatsServer, jetstream, read_stream, wait_for_count
from tests.pg import ORIGIN, ROOT, secret_of, served_version
from tests.procs import free_port
from tests.procs import stop as stop_process

pytestmark = [pytest.mark.slow]
STREAM, PREFIX = "CRASH_EVENTS", "crash"


def start_gateway(port: int, data_dir: Path, nats_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_BANNERS_DIR": str(ROOT / "banners"),
        "GATEWAY_LOCALES_DIR": str(ROOT / "locales"),
        "GATEWAY_RELOAD": "false",
        "GATEWAY_DURABILITY": "power",
        "GATEWAY_FORWARD_MAX_BACKOFF": "0.5",
        "GATEWAY_NODE_ID": "nats-crash-node",
        # One load generator writes from one address: the per-client write limit is not
        # what this test is about.
        "GATEWAY_CLIENT_WRITES_PER_MINUTE": "0",
        "GATEWAY_LOG_LEVEL": "error",
        "GATEWAY_NATS_URL": nats_url,
        "GATEWAY_NATS_STREAM": STREAM,
        "GATEWAY_NATS_SUBJECT_PREFIX": PREFIX,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "gateway.app:factory",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "error"],
        cwd=ROOT, env=env,
    )  # fmt: skip


async def load(
    base: str,
    acked: dict[str, str],
    tag: str,
    seconds: float,
    workers: int = 16,
    then: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """POST consents from ``workers`` clients; after ``seconds`` run ``then`` (a crash) while
    they keep posting, and stop them a second later. Every 201 is recorded."""
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=5) as client:
        version = await served_version(client, base)

        async def writer(worker: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                subject = f"{tag}-{worker}-{n}"
                body = {"subject_secret": secret_of(subject), "banner_version": version,
                        "action": "accept_all",
                        "choices": {"analytics": True, "marketing": True,
                                    "personalization": True}}  # fmt: skip
                try:
                    r = await client.post(f"{base}/v1/sites/demo/consents", json=body,
                                          headers={"Origin": ORIGIN})  # fmt: skip
                except httpx.TransportError:
                    return  # the gateway is gone
                if r.status_code == 201:
                    acked[r.json()["record_id"]] = r.json()["subject_id"]

        tasks = [asyncio.create_task(writer(i)) for i in range(workers)]
        await asyncio.sleep(seconds)
        if then is not None:
            await then()
            await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks)


async def test_each_acknowledged_record_is_in_the_stream_once_across_nats_and_gateway_crashes(
    tmp_path: Path,
) -> None:
    nats = NatsServer(tmp_path / "jetstream")
    nats.start()
    # Acknowledgements reach the gateway 1.5 s late, so when it is killed it has published
    # records it never saw acknowledged: the restarted gateway must publish them again.
    proxy = AckDelayProxy(nats.port, delay=1.5)
    await proxy.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    acked: dict[str, str] = {}
    gateway = start_gateway(port, tmp_path / "data", proxy.url)
    try:
        # 1. NATS is killed (SIGKILL) under load and comes back on the same store.
        async def restart_nats() -> None:
            nats.kill()
            await asyncio.sleep(1.0)
            nats.start()

        await load(base, acked, "nats", 1.5, then=restart_nats)
        before_crash = len(acked)
        assert before_crash > 50, "the load did not get going"
        async with jetstream(nats.url) as js:  # caught up: what follows is in flight anew
            assert await wait_for_count(js, STREAM, before_crash, within=60) >= before_crash

        # 2. The gateway is killed mid-stream, then restarted on the same data dir.
        async def kill_gateway() -> None:
            os.kill(gateway.pid, signal.SIGKILL)
            gateway.wait(timeout=10)

        before_kill = set(acked)
        await load(base, acked, "gw", 2.0, then=kill_gateway)
        assert len(acked) > before_crash
        # Subject ids are derived from the client's secret, so the phase a record was posted
        # in is told by its record id, not by its subject id.
        killed_phase = set(acked) - before_kill
        gateway = start_gateway(port, tmp_path / "data", proxy.url)
        await load(base, acked, "after", 0.5, workers=4)

        async with jetstream(nats.url) as js:
            count = await wait_for_count(js, STREAM, len(acked), within=60)
            assert count >= len(acked), f"{count} of {len(acked)} acknowledged records published"
            await asyncio.sleep(3.0)  # let late redeliveries arrive before counting
            messages = await read_stream(js, STREAM)
        ids = [m.headers["Nats-Msg-Id"] for m in messages]
        assert len(ids) == len(set(ids)), "a record id is in the stream twice"
        subjects = {m.headers["Nats-Msg-Id"]: orjson.loads(m.data)["subject_id"]
                    for m in messages}  # fmt: skip
        assert {rid: subjects.get(rid) for rid in acked} == acked
        # The scenario did redeliver records NATS had stored before the gateway was killed:
        # records posted in the second phase went to NATS more than once.
        sent = proxy.msg_id_counts()
        assert set(sent) == set(ids)
        resent = [rid for rid, n in sent.items() if n > 1 and rid in killed_phase]
        assert resent, "no redelivery after the kill; the test would prove nothing"
    finally:
        stop_process(gateway)
        await proxy.stop()
        nats.stop()
