"""Supervised background tasks: a failure is logged, counted and retried with backoff."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.core.tasks import Supervisor, SupervisorCollector, backoff_delay
from tests.pg import eventually


def test_backoff_grows_with_jitter_and_stops_at_the_cap() -> None:
    rng = random.Random(7)
    for attempt in range(40):
        step = min(2.0, 0.05 * 2**attempt)
        delays = {backoff_delay(attempt, cap=2.0, rng=rng) for _ in range(20)}
        assert all(step / 2 <= d <= step for d in delays)
        assert len(delays) > 1  # jittered, so nodes retrying together spread out
    assert max(backoff_delay(10_000, cap=2.0, rng=rng) for _ in range(100)) <= 2.0


async def test_a_task_that_dies_is_logged_counted_and_restarted_not_lost_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(base_backoff=0.01, max_backoff=0.05)
    runs = 0
    working = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise OSError(28, "No space left on device")
        working.set()
        await asyncio.Event().wait()  # then it works for good

    with caplog.at_level(logging.ERROR, logger="gateway.tasks"):
        entry = supervisor.start("flaky", flaky)
        await asyncio.wait_for(working.wait(), 5)
    assert (runs, entry.failures, entry.up) == (4, 3, True)
    assert entry.last_error == "OSError: [Errno 28] No space left on device"
    failures = [r for r in caplog.records if r.name == "gateway.tasks"]
    assert len(failures) == 3
    assert all(r.levelno == logging.ERROR and r.exc_info for r in failures)  # with traceback
    assert supervisor.down() == []
    await supervisor.stop()
    assert entry.task is not None and entry.task.done()


async def test_a_task_waiting_to_restart_counts_as_down() -> None:
    supervisor = Supervisor(base_backoff=0.5, max_backoff=0.5)

    async def broken() -> None:
        raise RuntimeError("cannot start")

    supervisor.start("broken", broken)
    await eventually(lambda: supervisor.tasks["broken"].failures == 1, within=2)
    assert supervisor.down() == ["broken"]
    assert supervisor.status()["broken"]["up"] is False
    registry = CollectorRegistry()
    registry.register(SupervisorCollector(supervisor))
    text = generate_latest(registry).decode()
    assert 'consent_task_up{task="broken"} 0.0' in text
    assert 'consent_task_failures_total{task="broken"} 1.0' in text
    await supervisor.stop()  # cancels the backoff wait at once
    assert supervisor.down() == []


async def test_a_task_that_finishes_its_work_is_not_restarted() -> None:
    supervisor = Supervisor(base_backoff=0.01)
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    entry = supervisor.start("once", once)
    assert entry.task is not None
    await entry.task
    await asyncio.sleep(0.05)
    assert (runs, entry.up, entry.failures, supervisor.down()) == (1, False, 0, [])
    supervisor.start("once", once)  # a finished name may start again
    await eventually(lambda: runs == 2, within=2)
    await supervisor.stop()
