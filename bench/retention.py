"""Retention benchmark: `store retention` over N monthly partitions, and a subject's history
(the store's most frequent read) with N partitions and after retention.

Run ``.venv/bin/python -m bench.retention [--months 24] [--per-month 20000]`` against the
local PostgreSQL; it makes and drops a scratch database. Records are written by PostgreSQL
itself (tests/audit_data.py), spread evenly over the months, 100,000 subjects.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway.audit import retention, service
from gateway.core.settings import Settings
from gateway.sinks.postgres import PostgresStore
from tests.audit_data import fill

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
START = datetime(2024, 1, 1, tzinfo=UTC)


async def _with_db(months: int, per_month: int) -> dict[str, Any]:
    name = f"bench_retention_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        return await _run(f"postgresql://postgres@127.0.0.1:5432/{name}", months, per_month)
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def _history_ms(store: PostgresStore, n: int = 300) -> float:
    rng = random.Random(7)
    times = []
    for _ in range(n):
        subject = f"subject-{rng.randrange(100_000)}"
        t0 = time.perf_counter()
        await store.subject_history("demo", subject)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 2)


async def _run(dsn: str, months: int, per_month: int) -> dict[str, Any]:
    count = months * per_month
    span = (START.replace(year=START.year + months // 12) - START).total_seconds()
    span = span if months % 12 == 0 else months * 30.4 * 86400
    await fill(dsn, count, start=START, step=span / count)
    settings = Settings(store_url=dsn, audit_key="bench-key-" + "x" * 22)
    store = PostgresStore(dsn, pool_size=1)
    await store.open()
    out: dict[str, Any] = {"records": count, "months": months}
    try:
        out["history_ms_median_before"] = await _history_ms(store)
        cutoff = START + timedelta(days=months * 30.4 / 2)  # half the months expire
        t0 = time.perf_counter()
        dry = await retention.retention(settings, cutoff, dry_run=True)
        out["dry_run_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        done = await retention.retention(settings, cutoff, dry_run=False)
        out["retention_s"] = round(time.perf_counter() - t0, 2)
        report = done.as_json()
        assert dry.kept == done.kept
        out["partitions_dropped"] = len(report["dropped_partitions"])
        out["records_dropped"] = report["records_dropped"]
        out["records_kept"] = report["records_kept"]
        out["history_ms_median_after"] = await _history_ms(store)
        t0 = time.perf_counter()
        verified = await service.verify(settings)
        assert verified.ok, verified.as_json()
        out["verify_after_s"] = round(time.perf_counter() - t0, 2)
    finally:
        await store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--per-month", type=int, default=20_000)
    args = parser.parse_args()
    for key, value in asyncio.run(_with_db(args.months, args.per_month)).items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
