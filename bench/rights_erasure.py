"""Erasure benchmark: how long deleting one subject's personal data takes in each store.

Run ``.venv/bin/python -m bench.rights_erasure [--others 100000] [--records 1000]``. It fills
the embedded SQLite store and a scratch PostgreSQL database with ``--others`` records of other
subjects plus ``--records`` records of one subject (each with an identity link), then erases
that subject as a deletion request does (tombstones with the original content hashes, blanked
fields, links deleted, one transaction; SQLite also checkpoints its WAL) and prints the time,
the median of ``--runs`` runs (a fresh subject each run).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from gateway.core.model import ConsentRecord
from gateway.sinks.directory import Link
from gateway.sinks.directory_postgres import PostgresDirectory
from gateway.sinks.directory_sqlite import SqliteDirectory
from gateway.sinks.postgres import PostgresStore
from gateway.sinks.rights_postgres import PostgresRights
from gateway.sinks.rights_sqlite import SqliteRights
from gateway.sinks.sqlite import SqliteStore

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def record(subject: str, n: int) -> ConsentRecord:
    return ConsentRecord(
        record_id=str(uuid.uuid4()), recorded_at=f"2026-12-06T10:{n // 60 % 60:02d}:"
        f"{n % 60:02d}.{n % 1000000:06d}Z", site="demo", subject_id=subject,
        banner_version="v1", consent_revision="c1", action="accept_all",
        choices={"analytics": True, "marketing": True}, channel="web", language="en",
        rule_id="gdpr", region_country="DE", region_subdivision=None, region_source="geoip",
        gpc=False, ip_truncated="203.0.113.0/24", user_agent="Mozilla/5.0 (bench) " + subject,
        origin="https://shop.example", page_url="https://shop.example/p?x=" + subject,
        node_id="bench",
    )  # fmt: skip


async def fill(
    store: SqliteStore | PostgresStore,
    directory: SqliteDirectory | PostgresDirectory,
    subject: str,
    n: int,
) -> None:
    batch = [record(subject, i) for i in range(n)]
    for start in range(0, n, 1000):
        await store.write_batch(batch[start : start + 1000])
    links = [Link("demo", subject, "email", f"{i:064x}", "2026-12-06T10:00:00.000000Z", "api")
             for i in range(3)]  # fmt: skip
    await directory.link(links)


async def run(kind: str, dsn: str, path: Path, others: int, records: int, runs: int) -> float:
    if kind == "sqlite":
        store: SqliteStore | PostgresStore = SqliteStore(path)
        directory: SqliteDirectory | PostgresDirectory = SqliteDirectory(path)
        rights: SqliteRights | PostgresRights = SqliteRights(path)
    else:
        store, directory, rights = PostgresStore(dsn), PostgresDirectory(dsn), PostgresRights(dsn)
    for part in (store, directory, rights):
        await part.open()
    try:
        for i in range(0, others, 10_000):
            await store.write_batch([record(f"other-{i + j}", i + j) for j in range(10_000)])
        times = []
        for n in range(runs):
            subject = f"subject-{n}"
            await fill(store, directory, subject, records)
            started = time.perf_counter()
            erased = await rights.erase("demo", [subject], "bench", "2026-12-06T11:00:00.000000Z")
            times.append(time.perf_counter() - started)
            if (erased.records, erased.identity_links) != (records, 3):
                raise RuntimeError(f"erased {erased}, expected {records} records and 3 links")
        return statistics.median(times)
    finally:
        for part in (rights, directory, store):
            await part.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--others", type=int, default=100_000)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    name = f"cg_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as work:
            for kind in ("sqlite", "postgres"):
                seconds = await run(
                    kind, f"postgresql://postgres@127.0.0.1:5432/{name}",
                    Path(work) / "store.sqlite3", args.others, args.records, args.runs,
                )  # fmt: skip
                print(
                    f"{kind:<8} erase 1 subject with {args.records} records among "
                    f"{args.others} others: {seconds * 1000:.1f} ms "
                    f"({args.records / seconds:,.0f} records/s)"
                )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
