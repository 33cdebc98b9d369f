"""Audit benchmark: chain verify records/s, report latency, export rows/s, and what the
store's triggers (chain + rollups) cost per stored record.

Run ``.venv/bin/python -m bench.audit [--records N]`` against the local PostgreSQL; it makes
and drops a scratch database. Records are written by PostgreSQL itself in batches of 50k
(tests/audit_data.py), each batch one statement as the forwarder's COPY is, so the triggers
fire per batch as in production. ``--store sqlite`` measures the embedded store instead
(records written by SqliteStore.write_batch in forwarder-sized batches, in a scratch dir).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from gateway.audit import service
from gateway.core.model import ACTIONS
from gateway.core.settings import Settings
from gateway.sinks.sqlite import FILE_NAME, SqliteStore
from tests.audit_data import fill
from tests.pg import make_record

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _with_db(records: int, span_days: float) -> dict[str, Any]:
    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        return await _run(dsn, records, span_days)
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def _with_dir(records: int, span_days: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        store = SqliteStore(settings.data_dir / FILE_NAME)
        await store.open()
        started = time.perf_counter()
        for start in range(0, records, 1000):  # GATEWAY_FORWARD_BATCH_SIZE
            await store.write_batch([make_record(f"s{(start + i) % 5000}", action=ACTIONS[i % 5])
                                     for i in range(min(1000, records - start))])  # fmt: skip
        elapsed = time.perf_counter() - started
        await store.close()
        out = await _measure(settings, records)
        return {
            "store": "sqlite",
            "store_records_per_s_with_chain": round(records / elapsed),
            **out,
        }


async def _run(dsn: str, records: int, span_days: float) -> dict[str, Any]:
    settings = Settings(store_url=dsn)
    out: dict[str, Any] = {"store": "postgres", "records": records, "span_days": span_days}
    started = time.perf_counter()
    await fill(dsn, records, step=span_days * 86400 / records)
    out["store_records_per_s_with_triggers"] = round(records / (time.perf_counter() - started))
    conn = await asyncpg.connect(dsn)
    try:
        # What a report reads: its latency follows these rows, not the records behind them.
        out["rollup_rows"] = await conn.fetchval("SELECT count(*) FROM consent_rollup")
        out["purpose_rollup_rows"] = await conn.fetchval(
            "SELECT count(*) FROM consent_purpose_rollup"
        )
    finally:
        await conn.close()
    return {**out, **await _measure(settings, records)}


async def _measure(settings: Settings, records: int) -> dict[str, Any]:
    out: dict[str, Any] = {"records": records}

    started = time.perf_counter()
    report = await service.verify(settings)
    assert report.ok, report.as_json()
    out["verify_records_per_s"] = round(report.checked / (time.perf_counter() - started))

    latencies = []
    for group in [("day",), ("day", "region"), ("banner_version", "language"), ("purpose",)]:
        for _ in range(5):
            t0 = time.perf_counter()
            await service.consent_report(settings, "demo", None, None, group)
            latencies.append(time.perf_counter() - t0)
    out["report_latency_ms_median"] = round(statistics.median(latencies) * 1000, 1)
    out["report_latency_ms_max"] = round(max(latencies) * 1000, 1)

    for fmt in ("csv", "jsonl"):
        rows = 0
        t0 = time.perf_counter()
        async for chunk in service.export(settings, "demo", None, None, {}, fmt):
            rows += chunk.count(b"\n")
        out[f"export_{fmt}_rows_per_s"] = round(rows / (time.perf_counter() - t0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument(
        "--span-days",
        type=float,
        default=365.0,
        help="the records are spread evenly over this many days (PostgreSQL): a year of a "
        "site's records makes the rollup rows a year's report reads",
    )
    args = parser.parse_args()
    run = _with_dir if args.store == "sqlite" else _with_db
    for key, value in asyncio.run(run(args.records, args.span_days)).items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
