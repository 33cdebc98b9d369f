"""Audit benchmark: chain verify records/s, report latency, export rows/s, and what the
store's triggers (chain + rollups) cost per stored record.

Run ``.venv/bin/python -m bench.audit [--records N]`` against the local PostgreSQL; it makes
and drops a scratch database. Records are written by PostgreSQL itself in batches of 50k
(tests/audit_data.py), each batch one statement as the forwarder's COPY is, so the triggers
fire per batch as in production. ``--store sqlite`` measures the embedded store instead
(records written by SqliteStore.write_batch in forwarder-sized batches, in a scratch dir).

``--preferences N`` and ``--rights N`` add N preference records (written by the store's
write_batch in batches of 1,000) and N rights-request transitions (4 a request, linked by
gateway/sinks/rights_chain.py in batches of 10,000 per site; a sample of 1,000 more goes
through the rights store's create/update, against the bare statements of before the chain in
the same run). Each kind's ``audit verify`` links/s is measured on a store holding that kind
alone (a scratch store of the same backend; best of two walks), then the three kinds are
walked together in the main store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from gateway.audit import service
from gateway.core.model import ACTIONS
from gateway.core.settings import Settings
from gateway.rights.base import store_for
from gateway.sinks import rights_chain
from gateway.sinks import sqlite as sqlite_store
from gateway.sinks.erasure_sqlite import ensure_tables
from gateway.sinks.postgres import PostgresStore
from gateway.sinks.preference_state import sqlite_fold
from gateway.sinks.rights import StoredRequest, Transition
from gateway.sinks.sqlite import FILE_NAME, SqliteStore
from gateway.sinks.sqlite_common import connect, transaction_of
from tests.audit_data import fill
from tests.pg import make_record
from tests.test_preference_records import CHANGES, preference

_LIFE = (
    (None, "received", "subject", ""),
    ("received", "verifying", "system", "code sent"),
    ("verifying", "in_progress", "subject", "code confirmed"),
    ("in_progress", "completed", "admin", "exported to the requester"),
)

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _with_db(records: int, span_days: float, kinds: tuple[int, int]) -> dict[str, Any]:
    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        out = await _run(dsn, records, span_days)
        return {**out, **await _per_kind(Settings(store_url=dsn), records, *kinds)}
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def _with_dir(records: int, span_days: float, kinds: tuple[int, int]) -> dict[str, Any]:
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
            **await _per_kind(settings, records, *kinds),
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


async def _walk(settings: Settings) -> tuple[float, service.VerifyReport]:
    """The best of two whole walks (seconds), and the last report."""
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        report = await service.verify(settings)
        best = min(best, time.perf_counter() - t0)
        assert report.ok, report.as_json()
    return best, report


@contextlib.asynccontextmanager
async def _scratch_like(settings: Settings) -> AsyncIterator[Settings]:
    """An empty store of the same backend (a scratch database or data dir)."""
    if not settings.store_url:
        with tempfile.TemporaryDirectory() as tmp:
            yield Settings(data_dir=Path(tmp))
        return
    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield Settings(store_url=f"postgresql://postgres@127.0.0.1:5432/{name}")
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def _per_kind(settings: Settings, consents: int, prefs: int, rights: int
                    ) -> dict[str, Any]:  # fmt: skip
    """verify links/s of each kind walked alone (the consents in ``settings``' store, the
    other kinds each in a scratch store of the same backend), then of all three together."""
    if not prefs and not rights:
        return {}
    out: dict[str, Any] = {}
    alone, report = await _walk(settings)
    out["verify_consent_links_per_s"] = round(report.kinds["consent"].checked / alone)
    if prefs:
        async with _scratch_like(settings) as scratch:
            out["store_preferences_per_s_with_chain"] = round(
                prefs / await _fill_preferences(scratch, prefs)
            )
            if not scratch.store_url:
                out["store_preferences_per_s_bare"] = await _bare_preferences(prefs)
            alone, report = await _walk(scratch)
            assert report.kinds["preference"].checked == prefs
            out["verify_preference_links_per_s"] = round(prefs / alone)
        await _fill_preferences(settings, prefs)
    if rights:
        async with _scratch_like(settings) as scratch:
            out.update(await _rights_writes(scratch, 250))
            await _fill_rights(scratch, rights)
            alone, report = await _walk(scratch)
            out["verify_rights_links_per_s"] = round(report.kinds["rights"].checked / alone)
        await _rights_writes(settings, 0)  # the rights tables
        await _fill_rights(settings, rights)
    together, report = await _walk(settings)
    out["verify_all_kinds"] = {k: v.checked for k, v in report.kinds.items() if v.checked}
    out["verify_all_links_per_s"] = round(report.checked / together)
    return out


def _preference_batches(count: int) -> list[list[Any]]:
    return [
        [preference(f"p{(start + i) % 5000}", CHANGES[i % len(CHANGES)])
         for i in range(min(1000, count - start))]
        for start in range(0, count, 1000)
    ]  # fmt: skip


async def _fill_preferences(settings: Settings, count: int) -> float:
    """``count`` preference records through the store's write_batch; the seconds it took
    (the records are made before)."""
    batches = _preference_batches(count)
    store = (
        PostgresStore(settings.store_url, pool_size=1)
        if settings.store_url
        else SqliteStore(settings.data_dir / FILE_NAME)
    )
    await store.open()
    try:
        t0 = time.perf_counter()
        for batch in batches:
            await store.write_batch(batch)
        return time.perf_counter() - t0
    finally:
        await store.close()


async def _bare_preferences(count: int) -> int:
    """The embedded store's preference write before the chain (append and fold, one
    transaction a batch, the same batches), in a scratch store: records/s."""
    bodies = [[orjson.dumps(r.as_json()).decode() for r in b] for b in _preference_batches(count)]
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / FILE_NAME)  # the schema
        await store.open()
        await store.close()
        db = connect(Path(tmp) / FILE_NAME)
        try:
            t0 = time.perf_counter()
            for batch in bodies:

                def write(c: Any, batch: list[str] = batch) -> None:
                    sqlite_store._append(c, "preference_records", batch)
                    sqlite_fold(c, [orjson.loads(b) for b in batch])

                await asyncio.to_thread(transaction_of(write), db)
            return round(count / (time.perf_counter() - t0))
        finally:
            db.close()


def _request(n: int) -> StoredRequest:
    at = f"2026-06-01T00:00:00.{n:06d}Z"
    return StoredRequest(
        str(uuid.uuid4()), "demo", "access", "received", "eu-gdpr", {"country": "DE"}, "email",
        (f"subject-{n}",), "email", "ab" * 32, "cd" * 32, None, None, 0, {}, "en", at, at, at,
    )  # fmt: skip


async def _rights_writes(settings: Settings, requests: int) -> dict[str, Any]:
    """Transitions/s through the rights store's create and update (each its own transaction,
    linked), and the bare baseline in the same run: the statements the store ran before the
    chain (the request's update and the transition's insert, one transaction each)."""
    if not settings.store_url:  # the records' tables, as the app's store makes them
        await ensure_tables(settings.data_dir / FILE_NAME)
    store = store_for(settings)
    await store.open()
    try:
        await store.get(str(uuid.uuid4()))  # opened and migrated
        t0 = time.perf_counter()
        ids = []
        for n in range(requests):
            request = _request(n)
            at = request.received_at
            await store.create(request, Transition(request.request_id, *_LIFE[0], at=at), [], [])
            for before, after, actor, reason in _LIFE[1:]:
                moved = Transition(request.request_id, before, after, actor, reason, at)
                await store.update(request.request_id, str(before), {"state": after}, moved, [])
            ids.append(request.request_id)
        chained = time.perf_counter() - t0
    finally:
        await store.close()
    if not requests:
        return {}
    bare = await _bare_transitions(settings, ids)
    n = requests * len(_LIFE)
    return {
        "rights_api_transitions_per_s_with_chain": round(n / chained),
        "rights_api_transitions_per_s_bare": round(n / bare),
    }


_BARE_UPDATE = "UPDATE rights_requests SET updated_at = 'x' WHERE request_id = {m}"
_BARE_INSERT = (
    "INSERT INTO bench_transitions SELECT {m}, coalesce(max(seq), 0) + 1, 'a', 'b', 'admin', "
    "'r', 'at' FROM bench_transitions WHERE request_id = {m}"
)
_BARE_TABLE = (
    "CREATE TABLE bench_transitions (request_id text, seq integer, from_state text, "
    "to_state text, actor text, reason text, at text, PRIMARY KEY (request_id, seq))"
)


async def _bare_transitions(settings: Settings, ids: list[str]) -> float:
    rounds = [(rid, i) for rid in ids for i in range(len(_LIFE))]
    if settings.store_url:
        conn = await asyncpg.connect(settings.store_url)
        try:
            await conn.execute(_BARE_TABLE)
            update, insert = _BARE_UPDATE.format(m="$1"), _BARE_INSERT.format(m="$1")
            t0 = time.perf_counter()
            for rid, _ in rounds:
                async with conn.transaction():
                    await conn.execute(update, rid)
                    await conn.execute(insert, rid)
            return time.perf_counter() - t0
        finally:
            await conn.close()
    db = connect(settings.data_dir / FILE_NAME, secure_delete=True)
    try:
        db.execute(_BARE_TABLE)
        update, insert = _BARE_UPDATE.format(m="?"), _BARE_INSERT.format(m="?")
        t0 = time.perf_counter()
        for rid, _ in rounds:

            def step(c: Any, rid: str = rid) -> None:
                c.execute(update, (rid,))
                c.execute(insert, (rid, rid))

            await asyncio.to_thread(transaction_of(step), db)
        return time.perf_counter() - t0
    finally:
        db.close()


async def _fill_rights(settings: Settings, count: int) -> None:
    """``count`` transitions (of count/4 requests of two sites), linked in batches."""
    rows = []
    for n in range(count // len(_LIFE)):
        request_id, site = str(uuid.uuid4()), ("demo", "other")[n % 2]
        at = f"2026-{1 + n % 12:02d}-01T00:00:00.{n % 1_000_000:06d}Z"
        rows += [(request_id, seq, *life, at, site) for seq, life in enumerate(_LIFE, 1)]
    rows.sort(key=lambda r: (r[7], r[6], r[0], r[1]))
    chunks = [rows[i : i + 10_000] for i in range(0, len(rows), 10_000)]
    if settings.store_url:
        conn = await asyncpg.connect(settings.store_url)
        try:
            for chunk in chunks:
                async with conn.transaction():
                    for site in ("demo", "other"):
                        mine = rights_chain.items_of([r for r in chunk if r[7] == site])
                        if mine:
                            await rights_chain.store_pg(conn, site, mine, insert=True)
        finally:
            await conn.close()
        return
    db = connect(settings.data_dir / FILE_NAME)
    try:
        for chunk in chunks:

            def link(c: Any, chunk: list[Any] = chunk) -> None:
                for site in ("demo", "other"):
                    mine = rights_chain.items_of([r for r in chunk if r[7] == site])
                    if mine:
                        rights_chain.store_sqlite(c, site, mine, insert=True)

            transaction_of(link)(db)
    finally:
        db.close()


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
    parser.add_argument(
        "--preferences",
        type=int,
        default=0,
        help="add this many preference records and time their walk",
    )
    parser.add_argument(
        "--rights",
        type=int,
        default=0,
        help="add this many rights-request transitions and time their walk",
    )
    args = parser.parse_args()
    run = _with_dir if args.store == "sqlite" else _with_db
    kinds = (args.preferences, args.rights)
    for key, value in asyncio.run(run(args.records, args.span_days, kinds)).items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
