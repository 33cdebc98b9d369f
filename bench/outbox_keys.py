"""Keyed appends through the outbox as its key table grows: CPU per record and disk.

Run ``.venv/bin/python -m bench.outbox_keys [--records 300000] [--window 50000]``.
Every POST the snippet sends carries an idempotency key, and each worker keeps its keys in
its outbox for a day, so the key table a worker writes to grows all day. This appends keyed
consents with random subjects (subject ids are keyed hashes: random, as in production) in
groups of ``--group`` concurrent appends, through the real outbox (``--durability``, with
its fsync helper and checkpointer), acknowledging delivered rows as the forwarder does, and
reports for each window of records the process's CPU per record (its threads included; the
fsync helper's own process is not) and the outbox's size. ``--unkeyed``: the same appends
without keys, the baseline. The same script runs on an older checkout
(``PYTHONPATH=<checkout>``) to compare the two.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any


def _record(clock: Any, keyed: bool = True) -> Any:
    from gateway.core.model import ConsentRecord
    from gateway.recording.fields import rfc3339_utc

    rid, ns = clock.next()
    return ConsentRecord(
        record_id=rid, recorded_at=rfc3339_utc(ns), site="demo",
        subject_id=uuid.uuid4().hex, banner_version="v1", consent_revision="r1",
        action="custom", choices={"necessary": True, "analytics": True, "marketing": False},
        channel="web", language="en", rule_id="eu-gdpr", region_country="DE",
        region_subdivision=None, region_source="header", gpc=False,
        ip_truncated="203.0.113.0/24", user_agent="bench", origin="http://127.0.0.1:8000",
        page_url="https://shop.example/", node_id="bench",
        idempotency_key=f"k-{uuid.uuid4().hex[:16]}" if keyed else None,
    )  # fmt: skip


def _megabytes(path: Path) -> float:
    """The outbox's file and WAL, in MB."""
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists()) / 1e6


async def run(records: int, window: int, group: int, durability: str, keyed: bool) -> None:
    from gateway.recording.fields import Uuid7Clock
    from gateway.recording.outbox.group_commit import Outbox
    from gateway.recording.receipts import canonical_json

    clock = Uuid7Clock()
    with tempfile.TemporaryDirectory(prefix="cg-keys-") as tmp:
        path = Path(tmp) / "outbox.sqlite3"
        outbox = Outbox(path, durability=durability)
        await outbox.open()
        print(
            f"{'keyed' if keyed else 'unkeyed'} appends, groups of {group}, durability={durability}"
        )
        print("   keys held   CPU us/record   wall us/record   outbox MB (file + WAL)")
        done = 0
        while done < records:
            start, cpu, wall = done, 0.0, 0.0
            while done < min(records, start + window):
                # Made outside the timed part (~5 µs each, the same in any checkout).
                batch = [_record(clock, keyed) for _ in range(min(group, records - done))]
                bodies = [canonical_json(r) for r in batch]
                cpu0, wall0 = time.process_time(), time.perf_counter()
                await asyncio.gather(*(outbox.append(r, "receipt", b)
                                       for r, b in zip(batch, bodies, strict=True)))  # fmt: skip
                done += len(batch)
                if done % 1000 < group:  # the forwarder delivers and acknowledges
                    items = await outbox.claim(5000)
                    await outbox.ack([i.seq for i in items])
                cpu += time.process_time() - cpu0
                wall += time.perf_counter() - wall0
            n = done - start
            megabytes = _megabytes(path)
            print(f"{done:>12,} {cpu / n * 1e6:>15.1f} {wall / n * 1e6:>16.1f} {megabytes:>20.1f}")
        await outbox.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--window", type=int, default=50_000)
    parser.add_argument("--group", type=int, default=30, help="concurrent appends per group")
    parser.add_argument("--durability", default="power", choices=["power", "process"])
    parser.add_argument("--unkeyed", action="store_true", help="no keys: the baseline")
    args = parser.parse_args()
    asyncio.run(run(args.records, args.window, args.group, args.durability, not args.unkeyed))


if __name__ == "__main__":
    main()
