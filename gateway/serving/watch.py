"""Live reload: poll banners/ and locales/ for changes and swap in valid edits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.core.settings import Settings
from gateway.serving.gateway import Gateway

log = logging.getLogger("gateway.watch")

POLL_SECONDS = 1.0


def tree_signature(*roots: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime_ns) of every file; cheap enough to poll once a second."""
    entries: list[tuple[str, int, int]] = []
    for root in roots:
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file():
                    st = path.stat()
                    entries.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))


class Watcher:
    """Polls rather than using inotify so it works the same on every filesystem and mount."""

    def __init__(
        self,
        settings: Settings,
        gateway: Gateway,
        on_reload: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.roots = (settings.banners_dir, settings.locales_dir)
        self.gateway = gateway
        self.on_reload = on_reload
        self._task: asyncio.Task[None] | None = None
        self._signature = tree_signature(*self.roots)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-watch")

    async def reload(self) -> bool:
        """Reload now; returns False (and keeps serving the last good state) when invalid."""
        ok = await asyncio.to_thread(self.gateway.catalog.reload)
        if ok:
            self.gateway.clear()
            if self.on_reload is not None:
                await self.on_reload()
        return ok

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                signature = await asyncio.to_thread(tree_signature, *self.roots)
                if signature != self._signature:
                    self._signature = signature
                    await self.reload()
            except Exception:  # the watcher must outlive any single bad edit
                log.exception("reload failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
