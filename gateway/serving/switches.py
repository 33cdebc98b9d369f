"""Dated rule switches: on the day a region joins its rule, serve the new rule at once.

Lookups switch by themselves (``RegionMap.refresh``), but the serving path also remembers
finished answers per region and these outlive the day. This task sleeps until the next switch
(waking at least hourly, so a clock that jumps is followed), then forgets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gateway.core.regionmap import RegionMap
from gateway.serving.gateway import Gateway

log = logging.getLogger("gateway.switches")

MAX_WAIT = 3600.0


class RuleSwitches:
    """Clears the gateway's memos whenever the region map has moved on."""

    def __init__(
        self,
        gateway: Gateway,
        region_map: RegionMap,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.gateway = gateway
        self.region_map = region_map
        self._sleep = sleep
        self._seen = region_map.epoch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="gateway-rule-switches")

    def check(self) -> bool:
        """Refresh the map; forget finished answers if it moved on since last seen."""
        self.region_map.refresh()
        if self.region_map.epoch == self._seen:
            return False
        self._seen = self.region_map.epoch
        self.gateway.clear()
        log.info("dated rules switched: regions now follow their new rules")
        return True

    async def run(self) -> None:
        """Until no dated region is left: sleep to the next switch, then apply it."""
        while True:
            at = self.region_map.next_switch()
            if at == float("inf"):
                return
            await self._sleep(min(max(at - self.region_map.now(), 0.0), MAX_WAIT))
            self.check()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
