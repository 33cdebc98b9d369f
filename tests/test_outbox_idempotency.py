"""Idempotency keys: a retried request is answered with the record it first created."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.helpers import opened
from tests.pg import make_record


async def test_same_idempotency_key_returns_the_original(tmp_path: Path) -> None:
    outbox = await opened(tmp_path)
    first = await outbox.append(make_record("a", key="k1"), "receipt-1")
    # Concurrent retries land in one group commit: still one record.
    retries = await asyncio.gather(
        *(outbox.append(make_record("a", key="k1"), "r") for _ in range(5))
    )
    other_site = await outbox.append(make_record("a", key="k1", site="shop"), "receipt-2")
    assert all(
        (a.record_id, a.receipt, a.duplicate) == (first.record_id, "receipt-1", True)
        for a in retries
    )
    assert not other_site.duplicate
    assert other_site.record_id != first.record_id
    assert outbox.depth == 2
    await outbox.close()
