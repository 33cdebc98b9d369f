"""The data disk fills up under load on `serve --workers 2`: a record that cannot be made
durable is answered 503, never 201, and recording comes back by itself once space returns.

Threat: a worker acknowledging a record it could not keep (the client stops retrying and the
choice is lost), or a worker that stays broken after the disk is freed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import fill_disk, small_disk
from tests.procs import free_port
from tests.workers_env import Gateway, Load, banner_version, sqlite_records

pytestmark = [pytest.mark.slow]


async def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_full_disk_answers_503_never_201_and_recording_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "64m") as disk:
        data = disk / "data"
        gw = Gateway(
            data, free_port(), 2, log_dir=tmp_path, GATEWAY_DURABILITY="power",
            GATEWAY_READY_MIN_FREE_MB="1",
        )  # fmt: skip
        try:
            await asyncio.to_thread(gw.wait_ready, 60, 2)
            load = Load(gw.base, await banner_version(gw.base))
            writers = [asyncio.create_task(load.writer(f"d{i}")) for i in range(8)]
            await eventually(lambda: load.ok() > 100, 30, "the load did not get going")
            ballast = await asyncio.to_thread(fill_disk, disk)
            full = f"no 503 on a full disk: {load.statuses}"
            await eventually(lambda: load.statuses.get(503, 0) > 20, 60, full)
            acked_while_full = load.ok()
            ballast.unlink()  # space returns: no restart, no operator
            await eventually(
                lambda: load.ok() > acked_while_full + 100, 60,
                f"recording did not come back: {load.statuses}",
            )  # fmt: skip
            load.running = False
            await asyncio.gather(*writers)
            assert await asyncio.to_thread(gw.stop) == 0
        finally:
            if gw.process.poll() is None:
                gw.process.kill()
                gw.process.wait()
        assert len(gw.workers()) == 0
        assert set(load.statuses) <= {201, 503}, load.statuses  # never a 500
        stored = sqlite_records(data)
        assert len(stored) == len(set(stored)), "a record was stored twice"
        assert set(load.acked) <= set(stored), "a 201 was answered for a record it lost"
