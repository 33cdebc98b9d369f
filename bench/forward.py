"""Forwarder benchmark: records/s from a filled outbox into a scratch PostgreSQL database.

Run ``.venv/bin/python -m bench.forward`` (``bench.record`` runs it too). It fills an outbox
once, then for each run copies it, starts the forwarder as the service would (the settings'
defaults: batch size, linger, pool size; the forwarder's default workers; the serving
process's garbage-collector tuning) against a fresh database, and times it draining the
outbox, end to end. Besides wall time it reports the CPU each record cost in this process and
in PostgreSQL's processes, which stay comparable when other work shares the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
ORIGIN = "http://127.0.0.1:8000"
SUBJECTS = 50_000  # records cycle through this many subjects: most move a latest state


async def fill(path: Path, records: int) -> None:
    """An outbox holding ``records`` bench records, appended as the recording path does."""
    from gateway.core.model import ConsentRecord
    from gateway.recording.fields import Uuid7Clock, rfc3339_utc
    from gateway.recording.outbox.group_commit import Outbox

    clock = Uuid7Clock()
    outbox = Outbox(path, durability="process")
    await outbox.open()
    try:
        for start in range(0, records, 5000):
            chunk = []
            for i in range(start, min(records, start + 5000)):
                rid, ns = clock.next()
                chunk.append(ConsentRecord(
                    record_id=rid, recorded_at=rfc3339_utc(ns), site="demo",
                    subject_id=f"subject-{i % SUBJECTS}", banner_version="v1",
                    consent_revision="r1", action="custom",
                    choices={"necessary": True, "analytics": True, "marketing": False,
                             "personalization": True},
                    channel="web", language="en", rule_id="eu-gdpr", region_country="DE",
                    region_subdivision=None, region_source="header", gpc=False,
                    ip_truncated="203.0.113.0/24", user_agent="Mozilla/5.0 bench",
                    origin=ORIGIN, page_url="https://shop.example/checkout", node_id="bench",
                ))  # fmt: skip
            await asyncio.gather(*(outbox.append(r, "receipt") for r in chunk))
    finally:
        await outbox.close()


def postgres_cpu_seconds() -> float:
    """User + system CPU of every PostgreSQL process on this machine (backends and helpers)."""
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def drain(template: Path, workdir: Path, **forwarder: Any) -> dict[str, Any]:
    """One run: a copy of the filled outbox drained into a new database."""
    from gateway.core.settings import Settings
    from gateway.recording.forwarder import Forwarder
    from gateway.recording.outbox.group_commit import Outbox
    from gateway.sinks.postgres import PostgresStore

    settings = Settings()
    name = f"cg_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    path = workdir / "outbox.sqlite3"
    shutil.copyfile(template, path)
    try:
        outbox = Outbox(path, durability=settings.durability)
        await outbox.open()
        records = outbox.depth
        store = PostgresStore(dsn, pool_size=settings.store_pool_size)
        await store.open()
        options = {
            "batch_size": settings.forward_batch_size,
            "linger": settings.forward_linger,
            **{k: v for k, v in forwarder.items() if v is not None},
        }
        worker = Forwarder(outbox, [store], **options)
        pg_before, py_before = postgres_cpu_seconds(), time.process_time()
        started = time.perf_counter()
        worker.start()
        await worker.stop(drain=600)  # returns once the workers find the outbox empty
        elapsed = time.perf_counter() - started
        pg_cpu, py_cpu = postgres_cpu_seconds() - pg_before, time.process_time() - py_before
        assert outbox.depth == 0, "the forwarder stopped before the outbox was empty"
        await outbox.close()
        await store.close()
        conn = await asyncpg.connect(dsn)
        stored = await conn.fetchval("SELECT count(*) FROM consent_records")
        latest = await conn.fetchval("SELECT count(*) FROM consent_latest")
        await conn.close()
    finally:
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        path.unlink(missing_ok=True)
    assert stored == records, f"{records} records forwarded but {stored} stored"
    assert latest == min(records, SUBJECTS)
    return {
        "records": records,
        "seconds": elapsed,
        "rps": records / elapsed,
        "py_us": py_cpu / records * 1e6,
        "pg_us": pg_cpu / records * 1e6,
        "options": options,
    }


async def forwarder_bench(
    records: int, runs: int = 1, batch_size: int | None = None, concurrency: int | None = None
) -> dict[str, Any]:
    """Median of ``runs`` drains of ``records`` records; every run's figures under "runs"."""
    from gateway.app import tune_gc

    with tempfile.TemporaryDirectory(prefix="cg-bench-") as tmp:
        template = Path(tmp) / "filled.sqlite3"
        await fill(template, records)
        tune_gc()  # what a serving process, where the forwarder runs, does at start-up
        results = [
            await drain(template, Path(tmp), batch_size=batch_size, concurrency=concurrency)
            for _ in range(runs)
        ]
    median = {k: statistics.median(r[k] for r in results) for k in ("seconds", "rps")}
    cpu = {k: statistics.median(r[k] for r in results) for k in ("py_us", "pg_us")}
    return {"records": records, **median, **cpu, "runs": results}


def report(fw: dict[str, Any]) -> str:
    """The summary line bench.record prints, then one line per run."""
    lines = [
        f"forwarder: {fw['records']} records outbox -> PostgreSQL in {fw['seconds']:.2f}s "
        f"= {fw['rps']:.0f} records/s (median of {len(fw['runs'])}; CPU per record: "
        f"forwarder {fw['py_us']:.1f} us, PostgreSQL {fw['pg_us']:.1f} us)"
    ]
    for r in fw["runs"]:
        lines.append(
            f"  run: {r['rps']:7.0f} records/s  forwarder {r['py_us']:5.1f} us/record  "
            f"PostgreSQL {r['pg_us']:5.1f} us/record  {r['options']}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, help="default: the settings' default")
    parser.add_argument("--concurrency", type=int, help="default: the forwarder's default")
    args = parser.parse_args()
    fw = asyncio.run(forwarder_bench(args.records, args.runs, args.batch_size, args.concurrency))
    print(report(fw))
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
