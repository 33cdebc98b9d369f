"""The outboxes of a data dir: which one a serving process owns, and the orphans it drains.

`consent-gateway serve` runs one process (the outbox is ``<data_dir>/outbox.sqlite3``) or N
workers under a supervisor (worker ``k`` owns ``<data_dir>/worker-<k>/outbox.sqlite3``). Every
owner holds ``outbox.lock`` beside its outbox (recording/datalock.py), so one process appends
to and forwards from each outbox. An outbox nobody owns after a change of the worker count
is an *orphan*: the root outbox under workers, ``worker-<j>`` for ``j > N``, every worker
outbox under a single process. Each orphan is assigned to exactly one current owner (round
robin over the workers by the orphan's rank), which takes its lock, forwards what it holds
into the same sinks (which drop a record id they already have: a record delivered but not
acknowledged before a crash is stored once), and removes it once empty. An orphan that keeps
dead letters stays, for `consent-gateway outbox status|replay`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core.ratelimit import SharedTables
from gateway.core.settings import Settings
from gateway.core.tasks import Supervisor
from gateway.recording.datalock import OUTBOX_LOCK_FILE, DataDirLock
from gateway.recording.forwarder import Forwarder
from gateway.recording.outbox.database import FILE_NAME
from gateway.recording.outbox.group_commit import Outbox
from gateway.recording.recent_keys import RecentKeys
from gateway.sinks.base import Sink

log = logging.getLogger("gateway.outbox")

_WORKER_DIR = re.compile(r"worker-([1-9][0-9]{0,5})")
_OWN_FILES = (FILE_NAME, FILE_NAME + "-wal", FILE_NAME + "-shm", OUTBOX_LOCK_FILE)
_POLL_S = 0.2


@dataclass(frozen=True)
class WorkerRole:
    """Worker ``index`` (1-based) of ``count`` under one supervisor, started after the
    supervisor had restarted that worker ``restarts`` times (0: its first start). Shared by
    every worker: ``limits``, the node's write-limit tables (core/ratelimit.SharedTables), and
    ``keys``, the idempotency keys each worker recorded lately (recording/recent_keys.py)."""

    index: int
    count: int
    restarts: int = 0
    limits: SharedTables | None = field(default=None, compare=False, repr=False)
    keys: RecentKeys | None = field(default=None, compare=False, repr=False)


def own_dir(data_dir: Path, role: WorkerRole | None) -> Path:
    """The folder of the outbox this process owns."""
    return Path(data_dir) if role is None else Path(data_dir) / f"worker-{role.index}"


def worker_dirs(data_dir: Path) -> list[tuple[int, Path]]:
    """``(index, folder)`` of every worker folder in the data dir, by index."""
    try:
        entries = list(Path(data_dir).iterdir())
    except OSError:
        return []
    found = [(int(m.group(1)), p) for p in entries if (m := _WORKER_DIR.fullmatch(p.name))]
    return sorted(x for x in found if x[1].is_dir())


def outbox_dirs(data_dir: Path) -> list[Path]:
    """Every folder of the data dir that holds an outbox (the root's first)."""
    root = [Path(data_dir)] if (Path(data_dir) / FILE_NAME).exists() else []
    return root + [p for _, p in worker_dirs(data_dir) if (p / FILE_NAME).exists()]


def orphans(data_dir: Path, role: WorkerRole | None) -> list[Path]:
    """The orphan outboxes this process must drain."""
    if role is None:
        return [p for p in outbox_dirs(data_dir) if p != Path(data_dir)]
    unowned = [p for p in outbox_dirs(data_dir) if p == Path(data_dir)]
    unowned += [p for i, p in worker_dirs(data_dir) if i > role.count and (p / FILE_NAME).exists()]
    return [p for rank, p in enumerate(unowned) if rank % role.count == role.index - 1]


async def drain_orphans(settings: Settings, paths: Sequence[Path], sinks: Sequence[Sink]) -> None:
    """Deliver every record of each orphan outbox into ``sinks`` and remove it once empty.

    Raises while an orphan is still locked by an exiting owner: the caller's supervisor runs
    it again with backoff, and orphans already drained are gone by then."""
    for path in paths:
        if (path / FILE_NAME).exists():
            await drain_one(settings, path, sinks)


async def drain_one(settings: Settings, path: Path, sinks: Sequence[Sink]) -> None:
    lock = DataDirLock(path, OUTBOX_LOCK_FILE)
    await asyncio.to_thread(lock.acquire, 2.0)
    try:
        tasks = Supervisor(max_backoff=settings.task_max_backoff)
        outbox = Outbox(
            path / FILE_NAME,
            durability="process",  # no appends; a lost ack only redelivers (idempotent sinks)
            max_records=settings.outbox_max_records,
            checkpoint_interval=settings.outbox_checkpoint_interval,
            tasks=tasks,
        )
        await outbox.open()
        start = outbox.depth
        log.info("draining the orphan outbox %s (%d record(s))", path, start)
        forwarder = Forwarder(
            outbox,
            sinks,
            batch_size=settings.forward_batch_size,
            max_backoff=settings.forward_max_backoff,
            tasks=tasks,
        )
        try:
            forwarder.start()
            while outbox.depth > 0:  # noqa: ASYNC110 (acks lower it; no event to wait on)
                await asyncio.sleep(_POLL_S)
            await forwarder.stop(1.0)
            dead = await outbox.dead_letter_count()
            quarantined = outbox.quarantined
        finally:
            await forwarder.stop(0.0)
            await outbox.close()
            await tasks.stop()
        if dead or quarantined is not None:
            log.warning("orphan outbox %s keeps %d dead letter(s): see `outbox status`", path, dead)
            return
        _remove(path, settings.data_dir)
        log.info("orphan outbox %s drained (%d record(s)) and removed", path, start)
    finally:
        lock.release()


def _remove(path: Path, data_dir: Path) -> None:
    """Remove a drained outbox's files (its lock last), and its worker folder if now empty."""
    for name in _OWN_FILES:
        (path / name).unlink(missing_ok=True)
    if path != Path(data_dir) and not any(path.iterdir()):
        shutil.rmtree(path, ignore_errors=True)
