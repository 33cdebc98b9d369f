"""Live reload: poll banners/ and locales/ for changes and swap in valid edits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.core.settings import Settings
from gateway.core.tasks import Supervisor
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
        self._tasks: Supervisor | None = None
        self._signature = tree_signature(*self.roots)

    def start(self, tasks: Supervisor | None = None) -> None:
        """Poll as the task ``watcher`` of ``tasks`` (the process's supervisor, or its own)."""
        self._tasks = tasks if tasks is not None else Supervisor()
        self._tasks.start("watcher", self._run)

    async def reload(self) -> bool:
        """Reload now; returns False (and keeps serving the last good state) when invalid."""
        ok = await asyncio.to_thread(self.gateway.catalog.reload)
        if ok:
            self.gateway.clear()
            if self.on_reload is not None:
                await self.on_reload()
        return ok

    async def _run(self) -> None:
        # An invalid edit is refused inside reload(); anything that escapes (too many open
        # files, a failing publish) is the supervisor's to log, count and retry with backoff.
        while True:
            await asyncio.sleep(POLL_SECONDS)
            signature = await asyncio.to_thread(tree_signature, *self.roots)
            if signature != self._signature:
                self._signature = signature
                await self.reload()

    async def stop(self) -> None:
        if self._tasks is not None:
            await self._tasks.stop("watcher")
            self._tasks = None
