"""The rights service: takes requests, verifies subjects, fulfils the gateway's part, tracks
downstream systems and deadlines. Its collaborators come in through small protocols (the
preferences and recording services sit on the same layer and are not imported).

Its parts, one module each: ports (inputs and collaborators), base (state, store calls,
transitions), verification, fulfilment, workflow (the admin queue), downstream.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.rights import kinds
from gateway.rights.base import MAX_OPEN, store_for
from gateway.rights.downstream import Downstream
from gateway.rights.ports import (
    NewRequest,
    RecordReader,
    RequestError,
    StateReader,
    Verification,
    fmt,
)
from gateway.rights.verification import Intake
from gateway.rights.workflow import Workflow
from gateway.sinks import directory_for

log = logging.getLogger("gateway.rights")


class RightsService(Intake, Workflow, Downstream):
    """Start it in the app's lifespan after the recording and preferences services."""

    # -- lifetime ------------------------------------------------------------------------

    async def start(self, *, interval: float = 30.0) -> None:
        await self.store.open()
        if self._own_directory:
            await self.directory.open()
        if self.settings.webhook_url:  # events go nowhere else: no client, no httpx import
            import httpx

            self._client = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        if interval > 0:
            self._loop = asyncio.create_task(self._periodic(interval))

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        if self._own_directory:
            await self.directory.close()
        await self.store.close()

    async def _periodic(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:  # a store outage: try again next time, never stop the loop
                log.exception("rights: periodic work failed")

    async def metrics_text(self) -> bytes:
        """Refresh the open/overdue gauges from the store, then the registry's text."""
        from prometheus_client import generate_latest

        try:
            open_requests = await self.store.listing(
                None, None, sorted(kinds.OPEN_STATES), None, MAX_OPEN
            )
        except Exception as exc:
            log.warning("rights: cannot read the queue for metrics: %s", exc)
            return generate_latest(self.metrics_registry)
        now = fmt(self.clock())
        counts: dict[str, list[int]] = {}
        for r in open_requests:
            entry = counts.setdefault(r.site, [0, 0])
            entry[0] += 1
            entry[1] += r.due_at < now
        for site in {*counts, *(s for (s,) in self._seen_sites())}:
            opened, overdue = counts.get(site, [0, 0])
            self.m_open.labels(site).set(opened)
            self.m_overdue.labels(site).set(overdue)
        return generate_latest(self.metrics_registry)

    def _seen_sites(self) -> list[tuple[str]]:
        # Sites with a gauge already: set back to 0 when their last request closes.
        return [(s.labels["site"],) for metric in self.m_open.collect() for s in metric.samples]


__all__ = [
    "NewRequest",
    "RecordReader",
    "RequestError",
    "RightsService",
    "StateReader",
    "Verification",
    "directory_for",
    "fmt",
    "store_for",
]
