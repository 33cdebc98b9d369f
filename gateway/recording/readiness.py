"""What /readyz says of the recording path: the facts, and the problems that make it unready.

Pure over the state it is handed (the outbox, the forwarder, the task supervisor, the free
space of the outbox's disk), so the one rule for "ready" lives here and the service only says
where its parts are.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from gateway.core.settings import Settings
from gateway.core.tasks import Supervisor
from gateway.recording.forwarder import Forwarder
from gateway.recording.outbox.group_commit import Outbox


def free_bytes(path: Path) -> int | None:
    """Bytes free for this process on the file system holding ``path`` (None if unknown)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def report(
    settings: Settings,
    *,
    accepting: bool,
    keys_ready: bool,
    outbox: Outbox,
    outbox_dir: Path,
    forwarder: Forwarder | None,
    tasks: Supervisor,
) -> dict[str, Any]:
    """Readiness facts; ``problems`` names what makes the path unready (``ok`` when none)."""
    f = forwarder
    since = None
    if f is not None and f.last_delivery is not None:
        since = round(time.monotonic() - f.last_delivery, 3)
    oldest = outbox.oldest_age()
    free = free_bytes(outbox_dir)
    problems = []
    if not accepting:
        problems.append("not_accepting")
    if not keys_ready:
        problems.append("keys_unavailable")
    if not outbox.writable:
        problems.append("outbox_not_writable")
    if f is None or not f.running:
        problems.append("forwarder_not_running")
    problems += [f"task_down:{name}" for name in tasks.down()]
    min_free = settings.ready_min_free_mb * 1024 * 1024
    if min_free and free is not None and free < min_free:
        problems.append("disk_low")
    lag_limit = settings.ready_max_forward_lag
    if lag_limit and oldest is not None and oldest > lag_limit:
        problems.append("forwarder_stalled")
    return {
        "ok": not problems,
        "problems": problems,
        "accepting": accepting,
        "outbox_writable": outbox.writable,
        "outbox_depth": outbox.depth,
        "outbox_oldest_age_seconds": None if oldest is None else round(oldest, 3),
        "outbox_wal_bytes": outbox.checkpointer.wal_bytes,
        "disk_free_bytes": free,
        "forwarder_running": f is not None and f.running,
        "forwarder_lag_seconds": None if oldest is None else round(oldest, 3),
        "seconds_since_last_delivery": since,
        "forwarder_last_error": f.last_error if f else None,
        "tasks": tasks.status(),
        "outbox_quarantined": str(outbox.quarantined) if outbox.quarantined else None,
    }
