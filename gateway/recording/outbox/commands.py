"""`consent-gateway outbox status|replay`: look at an outbox and re-queue its dead letters.

They open the outbox beside a running gateway (they take no data-dir lock, see
recording/datalock.py) and close it again; with `serve --workers N`, every outbox of the data
dir (recording/outboxes.py).
"""

from __future__ import annotations

import time
from typing import Any

from gateway.core.settings import Settings
from gateway.recording.outbox.database import FILE_NAME
from gateway.recording.outbox.group_commit import Outbox
from gateway.recording.outboxes import outbox_dirs


def _outboxes(settings: Settings) -> list[Outbox]:
    folders = outbox_dirs(settings.data_dir) or [settings.data_dir]
    return [
        Outbox(
            folder / FILE_NAME,
            durability=settings.durability,
            max_records=settings.outbox_max_records,
        )
        for folder in folders
    ]


async def outbox_status(settings: Settings) -> dict[str, Any]:
    """What `consent-gateway outbox status` prints: one outbox's figures, or the sums over
    the workers' outboxes with each one's under ``outboxes``."""
    each = [await _status(outbox) for outbox in _outboxes(settings)]
    if len(each) == 1:
        return each[0]
    ages = [s["oldest_age_seconds"] for s in each if s["oldest_age_seconds"] is not None]
    return {
        "depth": sum(s["depth"] for s in each),
        "oldest_age_seconds": max(ages, default=None),
        "dead_letters": sum(s["dead_letters"] for s in each),
        "outboxes": each,
    }


async def _status(outbox: Outbox) -> dict[str, Any]:
    await outbox.open()
    try:
        dead = await outbox.dead_letters(limit=20)
        return {
            "path": str(outbox.path),
            "durability": outbox.durability,
            "depth": outbox.depth,
            "oldest_age_seconds": outbox.oldest_age(),
            "dead_letters": await outbox.dead_letter_count(),
            "dead_letter_sample": [
                {
                    "record_id": d.record_id,
                    "sink": d.sink,
                    "reason": d.reason,
                    "dead_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d.dead_ns / 1e9)),
                }
                for d in dead
            ],
            "quarantined": str(outbox.quarantined) if outbox.quarantined else None,
        }
    finally:
        await outbox.close()


async def outbox_replay(settings: Settings) -> int:
    """Queue every dead letter for delivery again; what `consent-gateway outbox replay` does."""
    moved = 0
    for outbox in _outboxes(settings):
        await outbox.open()
        try:
            moved += await outbox.replay()
        finally:
            await outbox.close()
    return moved
