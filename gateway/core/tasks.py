"""Supervised background tasks: a failure is logged, counted and retried with backoff.

A background task that dies quietly stops its work until a restart (the forwarder did, on
a failed outbox ack with the disk full). Every long-running task of the gateway therefore
runs under a ``Supervisor``: an exception is logged with its traceback, counted, and the task
is started again after an exponential, jittered delay; while it waits, the task counts as
down, which ``/readyz`` reports. A task that returns has finished its work (a drained
forwarder) and is not restarted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("gateway.tasks")

Run = Callable[[], Awaitable[None]]
BASE_BACKOFF = 0.05


def backoff_delay(
    attempt: int, *, cap: float, rng: random.Random, base: float = BASE_BACKOFF
) -> float:
    """Exponential backoff with equal jitter: half the step fixed, half random, at most cap."""
    step = min(cap, base * 2.0 ** min(attempt, 32))
    return step / 2 + rng.uniform(0, step / 2)


class Supervised:
    """One supervised task and what operators see of it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.task: asyncio.Task[None] | None = None
        self.up = False  # running its work (not waiting to restart, not finished)
        self.failures = 0
        self.last_error: str | None = None
        self.last_failure: float | None = None  # monotonic time

    @property
    def down(self) -> bool:
        """Failed and waiting to restart: its work is not being done."""
        return self.task is not None and not self.task.done() and not self.up

    def status(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "failures": self.failures,
            "last_error": self.last_error,
            "seconds_since_failure": None
            if self.last_failure is None
            else round(time.monotonic() - self.last_failure, 3),
        }


class Supervisor:
    """Starts named tasks and restarts each one that fails; ``stop`` cancels them all."""

    def __init__(
        self,
        *,
        base_backoff: float = BASE_BACKOFF,
        max_backoff: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not a secret
        self.tasks: dict[str, Supervised] = {}

    def start(self, name: str, run: Run) -> Supervised:
        """Run ``run()`` as the task ``name`` (a finished task of that name is replaced)."""
        old = self.tasks.get(name)
        if old is not None and old.task is not None and not old.task.done():
            raise RuntimeError(f"task {name} is already running")
        entry = Supervised(name)
        entry.up = True  # from now on, not only once the loop first runs it
        entry.task = asyncio.create_task(self._supervise(entry, run), name=name)
        self.tasks[name] = entry
        return entry

    async def _supervise(self, entry: Supervised, run: Run) -> None:
        attempt = 0
        while True:
            entry.up = True
            started = time.monotonic()
            try:
                await run()
            except asyncio.CancelledError:
                entry.up = False
                raise
            except Exception as exc:
                entry.up = False
                entry.failures += 1
                entry.last_error = f"{type(exc).__name__}: {exc}"[:500]
                entry.last_failure = time.monotonic()
                if entry.last_failure - started > self.max_backoff:
                    attempt = 0  # it ran well for a while: start the backoff over
                delay = backoff_delay(
                    attempt, cap=self.max_backoff, rng=self._rng, base=self.base_backoff
                )
                attempt += 1
                log.exception(
                    "task %s failed (failure %d); restarting in %.2fs",
                    entry.name, entry.failures, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
            else:
                entry.up = False
                return

    def down(self) -> list[str]:
        """Names of the tasks that failed and wait to be restarted."""
        return [name for name, entry in self.tasks.items() if entry.down]

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: entry.status() for name, entry in self.tasks.items()}

    async def stop(self, *names: str) -> None:
        """Cancel the named tasks (all when none are named) and wait for them to end."""
        entries = (
            [self.tasks[n] for n in names if n in self.tasks] if names else [*self.tasks.values()]
        )
        for entry in entries:
            if entry.task is not None:
                entry.task.cancel()
        for entry in entries:
            task = entry.task
            # Cancel again until it ends: a cancellation can be swallowed (asyncio.wait_for
            # on 3.11 does when its inner future completes at the same moment).
            while task is not None and not task.done():
                await asyncio.wait({task}, timeout=1.0)
                task.cancel()
            if task is not None and not task.cancelled():
                task.exception()  # retrieved: supervised tasks end by cancellation only
            entry.up = False


class SupervisorCollector(Collector):
    """Prometheus metrics of every supervised task, read at scrape time."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "consent_task_up", "1 while a background task does its work.", labels=["task"]
        )
        failures = CounterMetricFamily(
            "consent_task_failures", "Failures of a background task (each retried).",
            labels=["task"],
        )  # fmt: skip
        for name, entry in sorted(self._supervisor.tasks.items()):
            up.add_metric([name], 1.0 if entry.up else 0.0)
            failures.add_metric([name], entry.failures)
        yield up
        yield failures
