"""The outbox's SQLite file: modes, and quarantine of a damaged file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import opened
from tests.pg import make_record


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
async def test_corrupt_outbox_is_quarantined_not_lost(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = await opened(tmp_path, durability="process")
    await asyncio.gather(
        *(outbox.append(make_record(f"s{i}", user_agent="u" * 300), "x") for i in range(400))
    )
    await outbox.close()
    with sqlite3.connect(path) as conn:  # fold the WAL in so the damage hits real pages
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    else:
        path.write_bytes(data[: len(data) // 3])
    damaged = path.read_bytes()

    fresh = await opened(tmp_path)
    assert fresh.quarantined is not None
    assert fresh.quarantined.read_bytes() == damaged
    assert fresh.depth == 0
    assert fresh.writable
    await fresh.append(make_record("after"), "x")
    assert fresh.depth == 1
    await fresh.close()
