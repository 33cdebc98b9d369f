"""`consent-gateway outbox status|replay`: look at an outbox and re-queue its dead letters.

They open the outbox beside a running gateway (they take no data-dir lock, see
recording/datalock.py) and close it again.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.core.settings import Settings
from gateway.recording.outbox.database import FILE_NAME
from gateway.recording.outbox.group_commit import Outbox


def _outbox(settings: Settings) -> Outbox:
    return Outbox(
        settings.data_dir / FILE_NAME,
        durability=settings.durability,
        max_records=settings.outbox_max_records,
    )


async def outbox_status(settings: Settings) -> dict[str, Any]:
    """What `consent-gateway outbox status` prints."""
    outbox = _outbox(settings)
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
    outbox = _outbox(settings)
    await outbox.open()
    try:
        return await outbox.replay()
    finally:
        await outbox.close()
