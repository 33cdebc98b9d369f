"""Three gateway nodes on one PostgreSQL store, under load: one killed with -9 and restarted,
one cut off from PostgreSQL for a while, and every node's connections to PostgreSQL dropped
mid-load (a failover, played by the proxies: the shared server itself is not restarted).

Every acknowledged (201) record is stored exactly once, and each subject's latest state is
its newest record across the nodes (threat: a node crash, a network partition or a failover
losing, doubling or reordering a legal record)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.helpers import OPS, OPS_TOKEN
from tests.pg import ORIGIN, ROOT, TcpProxy, pg_dsn, secret_of, served_version  # noqa: F401
from tests.procs import free_port
from tests.procs import stop as stop_process

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CONSENT_GATEWAY = str(Path(sys.executable).parent / "consent-gateway")
SUBJECTS = [f"multi-{i}" for i in range(40)]
RECEIPT_KEY = "multi-node-receipt-key-0123456789abcdef"  # shared: subject ids match across nodes


@dataclass
class Node:
    name: str
    data_dir: Path
    proxy: TcpProxy
    dsn: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """`consent-gateway serve` as README tells users, settings from GATEWAY_*."""
        env = {
            **os.environ,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_DATA_DIR": str(self.data_dir),
            "GATEWAY_BANNERS_DIR": str(ROOT / "banners"),
            "GATEWAY_LOCALES_DIR": str(ROOT / "locales"),
            "GATEWAY_STORE_URL": self.dsn.replace(":5432/", f":{self.proxy.port}/"),
            "GATEWAY_NODE_ID": self.name,
            "GATEWAY_RECEIPT_KEY": RECEIPT_KEY,
            "GATEWAY_RELOAD": "false",
            "GATEWAY_FORWARD_MAX_BACKOFF": "0.3",
            "GATEWAY_SHUTDOWN_DRAIN": "2",
            "GATEWAY_CLIENT_WRITES_PER_MINUTE": "0",
            "GATEWAY_SUBJECT_WRITES_PER_MINUTE": "0",
            "GATEWAY_OPS_TOKEN": OPS_TOKEN,
            "GATEWAY_LOG_LEVEL": "warning",
        }
        self.proc = subprocess.Popen([CONSENT_GATEWAY, "serve"], cwd=ROOT, env=env)

    async def ready(self, client: httpx.AsyncClient) -> str:
        return await served_version(client, self.base, within=40)


@dataclass
class Ack:
    record_id: str
    subject_id: str
    recorded_at: str
    node: str
    subject: str  # the test's name for it (its secret is secret_of(subject))


async def _load(nodes: list[Node], version: str, stop: asyncio.Event, acked: list[Ack]) -> None:
    """A small async client: 12 writers, each posting to the nodes in turn, shared subjects."""
    down: dict[str, float] = {}

    async def writer(worker: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(worker)
        turn = worker
        while not stop.is_set():
            node = nodes[turn % len(nodes)]
            turn += 1
            if down.get(node.name, 0) > time.monotonic():
                await asyncio.sleep(0.005)
                continue
            subject = rng.choice(SUBJECTS)
            action = rng.choice(["accept_all", "reject_all"])
            value = action == "accept_all"
            body = {"subject_secret": secret_of(subject), "banner_version": version,
                    "action": action, "choices": {"analytics": value, "marketing": value,
                                                  "personalization": value}}  # fmt: skip
            try:
                r = await client.post(f"{node.base}/v1/sites/demo/consents", json=body,
                                      headers={"Origin": ORIGIN})  # fmt: skip
            except httpx.TransportError:
                down[node.name] = time.monotonic() + 0.3  # killed: try the others
                continue
            if r.status_code == 201:
                a = r.json()
                acked.append(
                    Ack(a["record_id"], a["subject_id"], a["recorded_at"], node.name, subject)
                )

    async with httpx.AsyncClient(timeout=5, limits=httpx.Limits(max_connections=24)) as client:
        await asyncio.gather(*(writer(i, client) for i in range(12)))


async def test_three_nodes_store_every_acknowledged_record_once(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811
) -> None:
    proxies = [TcpProxy(5432) for _ in range(3)]
    for p in proxies:
        await p.start()
    nodes = [Node(f"node-{i}", tmp_path / f"node-{i}", proxies[i], pg_dsn) for i in range(3)]
    acked: list[Ack] = []
    stop = asyncio.Event()
    try:
        for n in nodes:
            n.start()
        async with httpx.AsyncClient(timeout=5) as client:
            versions = await asyncio.gather(*(n.ready(client) for n in nodes))
        load = asyncio.create_task(_load(nodes, versions[0], stop, acked))
        await asyncio.sleep(2)
        crashed, cut, failover = nodes
        assert crashed.proc is not None
        os.kill(crashed.proc.pid, signal.SIGKILL)  # mid-stream: requests in flight
        crashed.proc.wait(timeout=10)
        at_kill = len(acked)
        await cut.proxy.stop()  # node-1 cannot reach PostgreSQL; it still acknowledges
        await asyncio.sleep(1.5)
        crashed.start()  # same data dir and node id: its outbox delivers
        async with httpx.AsyncClient(timeout=5) as client:
            await crashed.ready(client)
        await asyncio.sleep(1)
        # A failover: every open connection to PostgreSQL drops at once, mid-COPY for some.
        for p in (failover.proxy, crashed.proxy):
            await p.stop()
            await p.start()
        await asyncio.sleep(2)
        await cut.proxy.start()  # node-1 reaches PostgreSQL again
        await asyncio.sleep(1.5)
        stop.set()
        await load
        by_node = {n.name: sum(1 for a in acked if a.node == n.name) for n in nodes}
        assert len(acked) > 200 and at_kill > 20 and min(by_node.values()) > 20, by_node

        conn = await asyncpg.connect(pg_dsn)
        try:
            ids = [a.record_id for a in acked]
            deadline = time.monotonic() + 30
            while True:
                found = await conn.fetchval(
                    "SELECT count(*) FROM consent_records WHERE record_id = ANY($1::uuid[])", ids
                )
                if found == len(ids):
                    break
                assert time.monotonic() < deadline, f"{found} of {len(ids)} acknowledged stored"
                await asyncio.sleep(0.2)
            async with httpx.AsyncClient(timeout=5) as client:
                for n in nodes:  # every outbox delivered, nothing dead-lettered
                    health = (await client.get(f"{n.base}/readyz", headers=OPS)).json()
                    assert health["recording"]["outbox_depth"] == 0, (n.name, health)
            total = await conn.fetchval("SELECT count(*) FROM consent_records")
            distinct = await conn.fetchval("SELECT count(DISTINCT record_id) FROM consent_records")
            rows = await conn.fetch(
                "SELECT record_id::text AS id, subject_id, node_id FROM consent_records "
                "WHERE record_id = ANY($1::uuid[])",
                ids,
            )
            newest = await conn.fetch(
                "SELECT DISTINCT ON (subject_id) subject_id, record_id::text AS id "
                "FROM consent_records ORDER BY subject_id, recorded_at DESC, record_id DESC"
            )
            latest = await conn.fetch(
                "SELECT subject_id, record_id::text AS id FROM consent_latest"
            )
            chained = await conn.fetchval(
                "SELECT count(*) FROM audit_chain WHERE ref = ANY($1::text[])", ids
            )
        finally:
            await conn.close()
        # Exactly once: every acknowledged record is stored once, with the subject and the
        # node it was acknowledged for (a record in flight at the kill may be stored too).
        assert total == distinct
        assert {r["id"]: (r["subject_id"], r["node_id"]) for r in rows} == {
            a.record_id: (a.subject_id, a.node) for a in acked
        }
        assert chained == len(ids)  # and linked into its node's chain once
        # The latest state of each subject is its newest record, whichever node took it.
        assert {r["subject_id"]: r["id"] for r in latest} == {
            r["subject_id"]: r["id"] for r in newest
        }
        newest_acked: dict[str, Ack] = {}
        for a in acked:
            known = newest_acked.get(a.subject_id)
            if known is None or (a.recorded_at, a.record_id) > (known.recorded_at, known.record_id):
                newest_acked[a.subject_id] = a
        writers = {a.node for a in newest_acked.values()}
        assert len(writers) >= 2  # the newest states came from several nodes
        newest_ids = {r["subject_id"]: r["id"] for r in newest}
        async with httpx.AsyncClient(timeout=5) as client:
            for a in list(newest_acked.values())[:10]:  # as a node that did not take it says
                other = next(n for n in nodes if n.name != a.node)
                r = await client.get(
                    f"{other.base}/v1/sites/demo/subjects/{a.subject_id}/consents",
                    headers={"Authorization": f"Subject {secret_of(a.subject)}"},
                )
                assert r.status_code == 200, r.text
                assert r.json()["current"]["record_id"] == newest_ids[a.subject_id]
    finally:
        stop.set()
        # All at once, in threads: the proxies run on this loop while the nodes drain.
        running = [n.proc for n in nodes if n.proc is not None]
        await asyncio.gather(*(asyncio.to_thread(stop_process, proc) for proc in running))
        for p in proxies:
            await p.stop()
