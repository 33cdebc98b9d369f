"""`/readyz` turns unready when the gateway cannot do its work, and says why.

The threats (security review §2, §4g): `/readyz` said "ready" with 0 bytes free on the data
disk, with the forwarder dead, and at start with the store unreachable, so a load balancer
kept sending traffic to a node that could only answer 503 or pile records up.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from starlette.testclient import TestClient

from gateway.core.settings import Settings
from gateway.sites.catalog import load_site
from tests.helpers import OPS, OPS_TOKEN, fill_disk, shipped_rules, small_disk
from tests.pg import ROOT, consent_body, recording_app
from tests.procs import free_port

BUNDLE = load_site(ROOT / "banners" / "demo", ROOT / "locales", shipped_rules())
MIB = 1024 * 1024


def make_settings(data_dir: Path, **changes: object) -> Settings:
    # The ops token: /readyz names its problems only to the holder (issue 10 item 8).
    base = Settings(data_dir=data_dir, durability="process", node_id="node-r", ops_token=OPS_TOKEN)
    return base.replace(**changes)


def problems(client: TestClient) -> tuple[int, list[str]]:
    answer = client.get("/readyz", headers=OPS)
    found: list[str] = answer.json()["recording"]["problems"]
    return answer.status_code, found


def wait_for(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_readyz_turns_unready_when_free_disk_falls_under_the_threshold(tmp_path: Path) -> None:
    free_mib = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize / MIB
    settings = make_settings(tmp_path / "data", ready_min_free_mb=free_mib + 1024)
    with TestClient(recording_app(settings)) as client:
        status, found = problems(client)
        assert (status, found) == (503, ["disk_low"])
        assert client.get("/readyz", headers=OPS).json()["recording"]["disk_free_bytes"] > 0
    with TestClient(recording_app(settings.replace(ready_min_free_mb=0.0))) as client:
        assert problems(client) == (200, [])


def test_readyz_turns_unready_on_a_really_full_data_disk_and_ready_once_space_returns(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk", size="32m") as disk:
        settings = make_settings(disk / "data", ready_min_free_mb=2.0)
        with TestClient(recording_app(settings)) as client:
            assert (
                client.post("/v1/sites/demo/consents", json=consent_body(BUNDLE, "a")).status_code
                == 201
            )
            assert problems(client) == (200, [])
            ballast = fill_disk(disk)
            assert "disk_low" in problems(client)[1]
            refused = client.post("/v1/sites/demo/consents", json=consent_body(BUNDLE, "b"))
            assert refused.status_code == 503  # never a 201 for a record it cannot keep
            ballast.unlink()
            wait_for(lambda: client.post(
                "/v1/sites/demo/consents", json=consent_body(BUNDLE, "c")
            ).status_code == 201)  # fmt: skip
            wait_for(lambda: problems(client) == (200, []))


def test_readyz_turns_unready_when_the_forwarder_stalls(tmp_path: Path) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nodb"
    # The receipt key set: an unreachable store cannot hand this new node the shared one.
    settings = make_settings(
        tmp_path / "data", store_url=unreachable, ready_max_forward_lag=0.3, receipt_key="r" * 32
    )
    with TestClient(recording_app(settings)) as client:
        assert problems(client) == (200, [])  # nothing waits yet
        answer = client.post("/v1/sites/demo/consents", json=consent_body(BUNDLE, "s"))
        assert answer.status_code == 201
        wait_for(lambda: "forwarder_stalled" in problems(client)[1])
        health = client.get("/readyz", headers=OPS).json()["recording"]
        assert health["outbox_oldest_age_seconds"] > 0.3
        assert health["forwarder_last_error"]


def test_readyz_turns_unready_while_a_background_task_is_down(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", task_max_backoff=0.2)
    with TestClient(recording_app(settings)) as client:
        tasks = client.app.state.recording.tasks  # type: ignore[attr-defined]
        running = sorted(tasks.status())
        assert {"forwarder-0", "forwarder-1", "outbox-checkpointer", "outbox-pruner"} <= set(
            running
        )

        async def cannot_start() -> None:
            raise OSError(24, "Too many open files")

        client.portal.call(tasks.start, "probe", cannot_start)  # type: ignore[union-attr]
        wait_for(lambda: "task_down:probe" in problems(client)[1])
        metrics = client.get("/metrics", headers=OPS).text
        assert 'consent_task_up{task="forwarder-0"} 1.0' in metrics
        assert 'consent_task_failures_total{task="probe"}' in metrics
        client.portal.call(tasks.stop, "probe")  # type: ignore[union-attr]
        assert problems(client) == (200, [])


async def test_every_recording_task_runs_under_the_supervisor(tmp_path: Path) -> None:
    from gateway.recording.service import RecordingService

    service = RecordingService(make_settings(tmp_path / "data", durability="power"))
    await service.start()
    await asyncio.sleep(0)
    assert set(service.tasks.status()) == {
        "forwarder-0",
        "forwarder-1",
        "outbox-checkpointer",
        "outbox-pruner",
        "outbox-fsync-helper",
    }
    assert service.tasks.down() == []
    await service.stop()
    assert not any(entry.up for entry in service.tasks.tasks.values())
