"""The outbox's SQLite file: modes, and quarantine of a damaged file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson
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


async def test_a_new_outbox_file_has_the_outbox_modes(tmp_path: Path) -> None:
    outbox = await opened(tmp_path, durability="process")
    pragmas = await outbox._submit(
        lambda c: [
            c.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "auto_vacuum", "wal_autocheckpoint", "synchronous")
        ]
    )
    # WAL; incremental auto-vacuum (2); checkpoints only from checkpoint.py; NORMAL (1).
    assert pragmas == ["wal", 2, 0, 1]
    await outbox.close()


async def test_an_older_outbox_file_is_converted_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    record = make_record("kept")
    with sqlite3.connect(path) as conn:  # as a version before incremental auto-vacuum made it
        conn.execute(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT "
            "NOT NULL, queued_ns INTEGER NOT NULL, body BLOB NOT NULL)"
        )
        conn.execute(
            "INSERT INTO outbox (record_id, queued_ns, body) VALUES (?, 0, ?)",
            (record.record_id, orjson.dumps(record.as_json()).decode()),
        )
    outbox = await opened(tmp_path, durability="process")
    assert outbox.depth == 1
    assert await outbox._submit(lambda c: c.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2
    assert [i.record() for i in await outbox.claim(5)] == [record]
    await outbox.close()
