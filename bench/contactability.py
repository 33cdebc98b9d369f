"""Contactability benchmark: identity checks/s through the gateway against PostgreSQL.

Run ``.venv/bin/python -m bench.contactability [--subjects 1000000]``. It fills a scratch
database with ``--subjects`` subjects, each linked to an e-mail address and holding a
preference state as the stores keep it from recorded changes (the merged state, and the
stamp of every leaf in ``extra``: core/preference_change.merge), starts the gateway as README
runs it
(`consent-gateway serve`, CPU 0) on it, and posts batches of 1,000 identities (95% known, 5%
unknown; one in a hundred malformed) from CPU 1 for ``--seconds``, ``--concurrency`` batches in
flight. It prints identity checks per second and the batch latency, the median of ``--runs``
runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from bench.harness import gateway, temp_data_dir
from gateway.core.preference_change import merge
from gateway.core.preference_model import PreferenceModel
from gateway.preferences import apikeys
from gateway.preferences.identities import IdentityHasher, normalize
from gateway.sinks.directory import StoredKey
from gateway.sinks.directory_postgres import PostgresDirectory

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
IDENTITY_KEY = "bench-identity-key-" + "k" * 32
BATCH = 1000
NOW = "2026-12-06T10:00:00.000000Z"
AT = datetime(2026, 12, 6, 10, tzinfo=UTC)


def email(i: int) -> str:
    return f"customer{i}@example.com"


def state(i: int) -> dict[str, Any]:
    """A spread of answers: about half may be e-mailed about offers."""
    return {
        "channels": {"email": i % 4 != 0, "sms": i % 3 == 0},
        "topics": {"offers": {"enabled": i % 3 != 1, "frequency": "weekly"}},
    }


async def fill(dsn: str, subjects: int) -> str:
    """Links and states for ``subjects`` subjects, and an API key; returns the key."""
    directory = PostgresDirectory(dsn)
    await directory.open()  # creates the tables
    new = apikeys.generate()
    await directory.add_key(
        StoredKey(new.key_id, "demo", "bench", apikeys.SCOPES, new.secret_hash, NOW)
    )
    await directory.close()
    hasher = IdentityHasher(IDENTITY_KEY.encode())
    model = PreferenceModel()
    conn = await asyncpg.connect(dsn)
    try:
        for start in range(0, subjects, 100_000):
            ids = range(start, min(subjects, start + 100_000))
            links = [
                (
                    "demo",
                    hasher.digest("demo", normalize(model, "email", email(i))),
                    f"subject-{i}",
                    "email",
                    AT,
                    "api",
                )
                for i in ids
            ]
            await conn.copy_records_to_table("identity_links", records=links)
            states = []
            for i in ids:
                merged, stamps = merge(None, {}, state(i), f"{NOW}|r{i}")
                extra = orjson.dumps({"stamps": stamps}).decode()
                states.append(
                    ("demo", f"subject-{i}", "", orjson.dumps(merged).decode(), f"r{i}", AT, extra)
                )
            await conn.copy_records_to_table("preference_state", records=states)
        await conn.execute("VACUUM ANALYZE")  # the steady state autovacuum keeps
    finally:
        await conn.close()
    return new.key


def batches(subjects: int, count: int) -> list[bytes]:
    rng = random.Random(12)
    out = []
    for _ in range(count):
        identities = []
        for n in range(BATCH):
            if n % 100 == 99:
                identities.append({"type": "email", "value": "not an address"})
            elif rng.random() < 0.05:
                identities.append(
                    {"type": "email", "value": f"stranger{rng.randrange(10**9)}@x.io"}
                )
            else:
                identities.append({"type": "email", "value": email(rng.randrange(subjects))})
        out.append(orjson.dumps({"channel": "email", "topic": "offers", "identities": identities}))
    return out


async def load(
    base: str, key: str, bodies: list[bytes], seconds: float, concurrency: int
) -> tuple[float, list[float]]:
    """(identity checks/s, batch latencies in ms)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = f"{base}/v1/sites/demo/contactability"
    latencies: list[float] = []
    done = 0
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as c:
        # Warm up: caches, the key, the connection pool.
        for body in bodies[:concurrency]:
            (await c.post(url, content=body, headers=headers)).raise_for_status()
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await c.post(url, content=bodies[i % len(bodies)], headers=headers)
                latencies.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200 or len(r.json()["results"]) != BATCH:
                    raise RuntimeError(f"bad answer {r.status_code}: {r.text[:200]}")
                done += BATCH
                i += concurrency

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - start
    return done / elapsed, latencies


def cpu_seconds(match: str) -> float:
    """CPU time (user + system) of the processes whose command line contains ``match``, or
    whose name is ``postgres`` when ``match`` is that: comparable when others load the machine."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if match == "postgres":
                hit = Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
            else:
                hit = match in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if hit:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue  # the process went away
    return ticks / os.sysconf("SC_CLK_TCK")


async def scratch() -> str:
    name = f"cg_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def drop(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    name = asyncio.run(scratch())
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        t0 = time.perf_counter()
        key = asyncio.run(fill(dsn, args.subjects))
        print(f"filled {args.subjects:,} subjects in {time.perf_counter() - t0:.1f} s")
        bodies = batches(args.subjects, 64)
        env = {
            "GATEWAY_STORE_URL": dsn,
            "GATEWAY_IDENTITY_KEY": IDENTITY_KEY,
            "GATEWAY_DATA_DIR": temp_data_dir(),
        }
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})
        rates, p50s, p99s, gw_us, pg_us = [], [], [], [], []
        with gateway(env) as base:
            port = base.rsplit(":", 1)[1]
            for run in range(args.runs):
                gw0, pg0, t0 = cpu_seconds(f"--port\0{port}"), cpu_seconds("postgres"), time.time()
                rate, lat = asyncio.run(load(base, key, bodies, args.seconds, args.concurrency))
                checks = rate * (time.time() - t0)  # the warm-up batches are few: ignored
                gw_us.append((cpu_seconds(f"--port\0{port}") - gw0) / checks * 1e6)
                pg_us.append((cpu_seconds("postgres") - pg0) / checks * 1e6)
                lat.sort()
                p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
                rates.append(rate)
                p50s.append(p50)
                p99s.append(p99)
                print(
                    f"run {run + 1}: {rate:,.0f} identity checks/s, batch p50 {p50:.1f} ms, "
                    f"p99 {p99:.1f} ms ({len(lat)} batches); CPU per check: gateway "
                    f"{gw_us[-1]:.1f} µs, PostgreSQL {pg_us[-1]:.1f} µs"
                )
        print(
            f"median: {statistics.median(rates):,.0f} identity checks/s "
            f"(batches of {BATCH}, {args.concurrency} in flight, {args.subjects:,} subjects), "
            f"batch p50 {statistics.median(p50s):.1f} ms, p99 {statistics.median(p99s):.1f} ms; "
            f"CPU per check: gateway {statistics.median(gw_us):.1f} µs "
            f"(one core: {1e6 / statistics.median(gw_us):,.0f} checks/s), "
            f"PostgreSQL {statistics.median(pg_us):.1f} µs; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
    finally:
        asyncio.run(drop(name))


if __name__ == "__main__":
    main()
