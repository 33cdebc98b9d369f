"""Outbox WAL under sustained writes: how big the WAL gets, and what bounding it costs.

Run ``.venv/bin/python -m bench.outbox_wal [--seconds 45] [--group 32] [--durability power]``.
It appends records without pause (groups of ``--group`` concurrent appends, as concurrent
POSTs arrive) for ``--seconds`` while the forwarder delivers them into the embedded SQLite
store, so the queue stays near empty: the security review's §2b case. It samples the WAL's
size after every group and reports records/s, the largest and last WAL size, checkpoint
rounds, how long appends were held, and the outbox file's size before and after a backlog is
delivered. The same script runs on a checkout from before the fix (``PYTHONPATH=<checkout>``):
there it uses the outbox's defaults and reports no rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
ORIGIN = "http://127.0.0.1:8000"


def _records(start: int, count: int, clock: Any) -> list[Any]:
    from gateway.core.model import ConsentRecord
    from gateway.recording.fields import rfc3339_utc

    out = []
    for i in range(start, start + count):
        rid, ns = clock.next()
        out.append(ConsentRecord(
            record_id=rid, recorded_at=rfc3339_utc(ns), site="demo",
            subject_id=f"subject-{i}", banner_version="v1", consent_revision="r1",
            action="custom", choices={"necessary": True, "analytics": True, "marketing": False},
            channel="web", language="en", rule_id="eu-gdpr", region_country="DE",
            region_subdivision=None, region_source="header", gpc=False,
            ip_truncated="203.0.113.0/24", user_agent="Mozilla/5.0 " + "x" * 400,
            origin=ORIGIN, page_url="https://shop.example/checkout", node_id="bench",
            idempotency_key=f"k{i}",
        ))  # fmt: skip
    return out


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


async def run(seconds: float, group: int, durability: str, checkpoint_mb: int) -> dict[str, Any]:
    from gateway.recording.fields import Uuid7Clock
    from gateway.recording.forwarder import Forwarder
    from gateway.recording.outbox.group_commit import Outbox
    from gateway.sinks.sqlite import SqliteStore

    work = Path(tempfile.mkdtemp(prefix="bench-wal-"))
    path = work / "outbox.sqlite3"
    options: dict[str, Any] = {"durability": durability}
    if "checkpoint_bytes" in inspect.signature(Outbox).parameters:
        options["checkpoint_bytes"] = checkpoint_mb * MIB
    outbox = Outbox(path, **options)
    await outbox.open()
    store = SqliteStore(work / "store.sqlite3")
    await store.open()
    forwarder = Forwarder(outbox, [store], batch_size=1000, linger=0.05)
    forwarder.start()
    clock = Uuid7Clock()
    written, largest, samples = 0, 0, []
    started = time.monotonic()
    next_sample = started
    while (now := time.monotonic()) - started < seconds:
        batch = _records(written, group, clock)
        await asyncio.gather(*(outbox.append(r, "receipt") for r in batch))
        written += group
        wal = _size(Path(str(path) + "-wal"))
        largest = max(largest, wal)
        if now >= next_sample:
            samples.append(round(wal / MIB, 1))
            next_sample += seconds / 10
    elapsed = time.monotonic() - started
    result: dict[str, Any] = {
        "records": written,
        "records_per_s": round(written / elapsed),
        "wal_max_mib": round(largest / MIB, 2),
        "wal_end_mib": round(_size(Path(str(path) + "-wal")) / MIB, 2),
        "wal_samples_mib": samples,
    }
    checkpointer = getattr(outbox, "checkpointer", None)
    if checkpointer is not None and hasattr(checkpointer, "rounds"):
        result.update(
            rounds=checkpointer.rounds,
            hold_max_ms=round(checkpointer.max_hold * 1000, 1),
            hold_share=round(checkpointer.hold_seconds / elapsed, 3),
        )
    # A backlog, then its delivery: does the file give the space back?
    await forwarder.stop(drain=60)
    for start in range(0, 20_000, 1000):
        await asyncio.gather(
            *(outbox.append(r, "receipt") for r in _records(written + start, 1000, clock))
        )
    if checkpointer is not None and hasattr(checkpointer, "round"):
        await checkpointer.round(outbox.held)
    result["file_with_backlog_mib"] = round(_size(path) / MIB, 1)
    forwarder = Forwarder(outbox, [store], batch_size=1000)
    forwarder.start()
    await forwarder.stop(drain=120)
    if checkpointer is not None and hasattr(checkpointer, "round"):
        for _ in range(10):
            await checkpointer.round(outbox.held)
    result["file_after_delivery_mib"] = round(_size(path) / MIB, 1)
    await outbox.close()
    await store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--group", type=int, default=32, help="concurrent appends per group")
    parser.add_argument("--durability", default="power", choices=["power", "process"])
    parser.add_argument("--checkpoint-mb", type=int, default=16)
    args = parser.parse_args()
    print(asyncio.run(run(args.seconds, args.group, args.durability, args.checkpoint_mb)))


if __name__ == "__main__":
    main()
