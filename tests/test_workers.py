"""`consent-gateway serve --workers N` with real processes: a worker killed with -9 is
restarted and loses no acknowledged record; SIGTERM drains every worker; a start with fewer
workers delivers the outboxes of the workers no longer run; /metrics reports every worker.

Threats: a crashed worker that stays down (capacity lost silently) or keeps crashing with
nothing in /metrics to alert on, a record acknowledged by a worker that died before
forwarding it and never delivered (or delivered twice), an outbox left behind when the
worker count shrinks (records lost without an error).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from gateway.recording.receipts import KEY_FILE, Receipts
from tests import pg
from tests.helpers import ROOT
from tests.pg import dsn_for, pg_dsn, scratch_database  # noqa: F401
from tests.procs import free_port
from tests.workers_env import (
    CLI,
    DEMO_CHOICES,
    Gateway,
    Load,
    loaded,
    outbox_files,
    pg_records,
    sqlite_records,
)

pytestmark = [pytest.mark.slow]


# Workers answer over real processes: poll every 0.1 s.
eventually = functools.partial(pg.eventually, every=0.1)


def undelivered(data_dir: Path) -> dict[str, int]:
    """Rows left in each outbox of the data dir, by folder name."""
    counts = {}
    for path in outbox_files(data_dir):
        conn = sqlite3.connect(path)
        try:
            counts[path.parent.name] = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        finally:
            conn.close()
    return counts


async def kill_one_worker_under_load(tmp_path: Path, store_url: str) -> tuple[Load, Gateway]:
    data = tmp_path / "data"
    gw = Gateway(data, free_port(), 2, GATEWAY_STORE_URL=store_url, GATEWAY_DURABILITY="power")
    try:
        load, writers = await loaded(gw, "w", 12, 100)
        victim = gw.workers()[0]
        os.kill(victim, signal.SIGKILL)  # mid-stream: requests are in flight on it
        await eventually(
            lambda: len(gw.workers()) == 2 and victim not in gw.workers(), 30,
            "the supervisor did not restart the killed worker",
        )  # fmt: skip
        await asyncio.to_thread(gw.wait_ready, 60, 2)
        after_restart = load.ok()
        await eventually(lambda: load.ok() > after_restart + 100, 30, "no 201 after restart")
        # The restarted worker answers its peers' scrapes once its metrics socket is up,
        # which may be a moment after it serves; a scrape meanwhile reports one worker.
        metrics = ""

        def both_scraped() -> bool:
            nonlocal metrics
            metrics = gw.metrics()
            return "gateway_workers_scraped 2.0" in metrics

        await eventually(both_scraped, 15, "a scrape never held both workers")
        load.running = False
        await asyncio.gather(*writers)
        for worker in ("1", "2"):  # both workers committed records, and both are reported
            assert f'consent_outbox_commits_total{{worker="{worker}"}}' in metrics
        # The supervisor counted the restart, and the restarted worker reports it.
        restarts = sorted(
            float(m.group(1))
            for m in re.finditer(r'^gateway_worker_restarts_total\{worker="[12]"\} (\S+)$',
                                 metrics, re.M)
        )  # fmt: skip
        assert restarts == [0.0, 1.0], metrics
        assert await asyncio.to_thread(gw.stop) == 0  # SIGTERM: drained and exited cleanly
    finally:
        if gw.process.poll() is None:
            gw.process.kill()
            gw.process.wait()
    assert "was killed by SIGKILL" in gw.log() and "restarting in" in gw.log()
    assert set(load.statuses) <= {201, "ReadError", "RemoteProtocolError", "ConnectError"}
    assert all(n == 0 for n in undelivered(data).values()), undelivered(data)
    return load, gw


@pytest.mark.postgres
async def test_kill_9_of_a_worker_loses_nothing_postgres(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811
) -> None:
    load, _ = await kill_one_worker_under_load(tmp_path, pg_dsn)
    stored = await pg_records(pg_dsn)
    assert len(stored) == len(set(stored)), "a record was stored twice"
    assert set(load.acked) <= set(stored), "an acknowledged record was lost"


async def test_kill_9_of_a_worker_loses_nothing_embedded_store(tmp_path: Path) -> None:
    load, gw = await kill_one_worker_under_load(tmp_path, "")
    # Every worker, the restarted one too, signed with the key made once before the fork.
    receipts = Receipts((gw.data_dir / KEY_FILE).read_bytes().strip())
    assert {receipts.verify(r).record_id for r in load.receipts} == set(load.acked)
    stored = sqlite_records(gw.data_dir)
    assert len(stored) == len(set(stored)), "a record was stored twice"
    assert set(load.acked) <= set(stored), "an acknowledged record was lost"


@pytest.mark.postgres
async def test_a_start_with_fewer_workers_delivers_the_orphan_outboxes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = "orphans-test-receipt-key-0123456789abcdef"  # the store is out of reach at first
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    gw = Gateway(
        data, free_port(), 2, GATEWAY_STORE_URL=unreachable, GATEWAY_RECEIPT_KEY=key,
        GATEWAY_SHUTDOWN_DRAIN="0.5",
    )  # fmt: skip
    try:
        load, writers = await loaded(gw, "o", 12, 300)
        load.running = False
        await asyncio.gather(*writers)
    finally:
        assert await asyncio.to_thread(gw.stop) == 0
    left = undelivered(data)
    assert left.get("worker-1", 0) > 0 and left.get("worker-2", 0) > 0, left
    assert sum(left.values()) == len(load.acked) == load.ok()

    async with scratch_database() as name:
        single = Gateway(data, free_port(), 1, GATEWAY_STORE_URL=dsn_for(name),
                         GATEWAY_RECEIPT_KEY=key)  # fmt: skip
        try:
            await asyncio.to_thread(single.wait_ready, 60)
            await eventually(
                lambda: not (data / "worker-1").exists() and not (data / "worker-2").exists(),
                # Not undelivered(data) here: it would open the outboxes the new process
                # is draining and removing, at the very moment this line runs.
                60, "the orphan outboxes worker-1 and worker-2 were not drained",
            )  # fmt: skip
        finally:
            # A single process is uvicorn's: it ends by re-raising the SIGTERM it handled.
            assert await asyncio.to_thread(single.stop) in (0, -signal.SIGTERM)
        stored = await pg_records(dsn_for(name))
    assert len(stored) == len(set(stored)), "a record was stored twice"
    assert set(stored) == set(load.acked), "an acknowledged record was lost"


def test_the_supervisor_stops_when_no_worker_can_start(tmp_path: Path) -> None:
    """Workers that fail at start-up are not restarted for ever: exit 3, like one process."""
    gw = Gateway(tmp_path / "data", free_port(), 2, GATEWAY_STORE_URL="mysql://nowhere")
    try:
        code = gw.process.wait(timeout=60)
    finally:
        gw.stop()
    assert code == 3, gw.log()
    assert "no worker could start" in gw.log() and "GATEWAY_STORE_URL" in gw.log()


def test_a_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        gw = Gateway(tmp_path / "data", taken.getsockname()[1], 2)
        code = gw.process.wait(timeout=60)
        gw.stop()
    assert code == 1
    assert "error: cannot listen on 127.0.0.1" in gw.log() and "Traceback" not in gw.log()


def test_admin_token_api_keys_and_receipts_work_on_every_worker(tmp_path: Path) -> None:
    """Whichever worker takes the connection, the same credentials open the same doors."""
    admin = "admin-token-for-the-workers-test-0123456789"
    gw = Gateway(tmp_path / "data", free_port(), 2, GATEWAY_ADMIN_TOKEN=admin)
    try:
        gw.wait_ready(60, 2)
        made = subprocess.run(
            [str(CLI), "keys", "create", "demo", "--name", "crm"], env=gw.env, cwd=ROOT,
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        key = made.stdout.strip().splitlines()[-1]
        version = httpx.get(f"{gw.base}/v1/sites/demo/config").json()["banner_version"]
        body = {"subject_secret": "1" * 32, "banner_version": version, "action": "reject_all",
                "choices": DEMO_CHOICES}  # fmt: skip
        recorded = httpx.post(f"{gw.base}/v1/sites/demo/consents", json=body).json()
        history = f"{gw.base}/v1/sites/demo/subjects/{recorded['subject_id']}/consents"
        by_receipt = {"Authorization": f"Bearer {recorded['receipt']}"}
        deadline = time.monotonic() + 20
        while httpx.get(history, headers=by_receipt).status_code != 200:  # once stored
            assert time.monotonic() < deadline, "the record was not delivered"
            time.sleep(0.1)
        calls = [
            (f"{gw.base}/admin/v1/sites/demo/versions", {"Authorization": f"Bearer {admin}"}),
            (f"{gw.base}/v1/sites/demo/subjects?identity=email:ann@example.com",
             {"Authorization": f"Bearer {key}"}),
            (history, by_receipt),
        ]  # fmt: skip
        for _ in range(20):  # each on a new connection: both workers answer some
            for url, headers in calls:
                answer = httpx.get(url, headers=headers)
                assert answer.status_code == 200, (url, answer.text)
        metrics = gw.metrics()
        for worker in ("1", "2"):
            assert re.search(rf'gateway_http_requests_total{{[^}}]*worker="{worker}"', metrics)
    finally:
        gw.stop()


def test_write_limits_are_the_nodes(tmp_path: Path) -> None:
    """Multiplying threat (issue 15): a client whose connections land on both workers got
    twice its write limit. Every request here comes on a new connection, so both workers
    take some (/metrics shows it), and the address still has 8 writes in all."""
    gw = Gateway(
        tmp_path / "data", free_port(), 2,
        GATEWAY_CLIENT_WRITES_PER_MINUTE="8", GATEWAY_CLIENT_WRITE_BURST="8",
    )  # fmt: skip
    try:
        gw.wait_ready(60, 2)
        url = f"{gw.base}/v1/sites/demo/consents"
        version = httpx.get(f"{gw.base}/v1/sites/demo/config").json()["banner_version"]
        choice = {"banner_version": version, "action": "reject_all", "choices": DEMO_CHOICES}
        statuses = [
            httpx.post(url, json={**choice, "subject_secret": f"{i:032x}"}).status_code
            for i in range(16)
        ]
        assert statuses == [201] * 8 + [429] * 8, statuses
        metrics = gw.metrics()
        for worker in ("1", "2"):  # both workers took writes
            assert re.search(
                rf'gateway_http_requests_total{{[^}}]*endpoint="post_consent"[^}}]*'
                rf'worker="{worker}"',
                metrics,
            ), metrics
    finally:
        gw.stop()


def test_a_retry_another_worker_takes_is_answered_from_the_first_record(tmp_path: Path) -> None:
    """Duplicate threat (issue 15): a retry comes on a new connection, which the kernel may
    give to the other worker, whose outbox does not hold the key: it recorded the choice a
    second time. Six sends of one choice with its key (each on a new connection, so both
    workers take some) make one record, one receipt; another choice under the key is 409."""
    gw = Gateway(tmp_path / "data", free_port(), 2)
    try:
        gw.wait_ready(60, 2)
        url = f"{gw.base}/v1/sites/demo/consents"
        version = httpx.get(f"{gw.base}/v1/sites/demo/config").json()["banner_version"]
        body = {"banner_version": version, "action": "reject_all", "choices": DEMO_CHOICES,
                "subject_secret": "3" * 32, "idempotency_key": "choice-1"}  # fmt: skip
        sends = [httpx.post(url, json=body) for _ in range(6)]
        assert [r.status_code for r in sends] == [201] * 6, [r.text for r in sends]
        assert len({(r.json()["record_id"], r.json()["receipt"]) for r in sends}) == 1
        assert [r.headers.get("idempotent-replayed") for r in sends] == [None] + ["true"] * 5

        # Two copies in flight at once (a client that gave up too soon), each on its own
        # connection: the worker that claims the key second waits for the first's record.
        def pair(i: int) -> set[str]:
            copy = {**body, "subject_secret": f"{i:032x}", "idempotency_key": f"pair-{i}"}
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(lambda _: httpx.post(url, json=copy), range(2)))
            assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
            return {a.json()["record_id"] for a in answers}

        assert all(len(pair(i)) == 1 for i in range(20)), "a pair was recorded twice"
        other = {**body, "choices": {**DEMO_CHOICES, "analytics": True}, "action": "custom"}
        refused = [httpx.post(url, json=other) for _ in range(4)]
        assert {r.status_code for r in refused} == {409}, [r.text for r in refused]
        metrics = gw.metrics()
        for worker in ("1", "2"):  # both workers answered the sends
            assert re.search(
                rf'gateway_http_requests_total{{[^}}]*endpoint="post_consent"[^}}]*'
                rf'worker="{worker}"',
                metrics,
            ), metrics
        # Each repeat counted as a replay by where its key was found (a 409 is none). Both
        # workers took sends, so the one that did not record answered some from the other's.
        replays = re.findall(
            r'^consent_idempotent_replays_total\{source="(\w+)",worker="\d"\} (\S+)$',
            metrics, re.M,
        )  # fmt: skip
        assert sum(float(n) for _, n in replays) == 5 + 20, metrics  # and one of each pair
        assert "other_worker" in {source for source, n in replays if float(n)}, metrics
        subject = sends[0].json()["subject_id"]
        deadline = time.monotonic() + 20
        while not sqlite_records(gw.data_dir):  # once delivered
            assert time.monotonic() < deadline, "the record was not delivered"
            time.sleep(0.1)
        time.sleep(0.5)  # a second record, had one been made, is delivered by now too
        conn = sqlite3.connect(gw.data_dir / "store.sqlite3")
        try:
            stored = conn.execute(
                "SELECT record_id FROM consent_records WHERE subject_id = ?", (subject,)
            ).fetchall()
        finally:
            conn.close()
        assert stored == [(sends[0].json()["record_id"],)], "a retry was recorded twice"
    finally:
        gw.stop()
