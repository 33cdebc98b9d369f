"""The forwarder: delivery, backoff with jitter and a cap, dead letters, replay, drain."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.core.record_codec import Record
from gateway.core.settings import Settings
from gateway.recording.forwarder import Forwarder, ForwarderCollector
from gateway.recording.outbox.commands import outbox_replay, outbox_status
from gateway.recording.outbox.database import FILE_NAME
from gateway.recording.outbox.group_commit import Outbox
from gateway.recording.service import RecordingService
from gateway.sinks.base import ObjectSink
from gateway.sinks.postgres import PostgresStore
from gateway.sinks.sqlite import SqliteStore
from tests.helpers import fill_disk, small_disk
from tests.pg import eventually, make_record, pg_dsn  # noqa: F401
from tests.procs import free_port


async def test_delivers_everything_and_reports_metrics(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / FILE_NAME, durability="process")
    await outbox.open()
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    records = [make_record(f"s{i % 10}") for i in range(2500)]
    await asyncio.gather(*(outbox.append(r, "x") for r in records))
    forwarder = Forwarder(outbox, [store], batch_size=1000)
    forwarder.start()
    await eventually(lambda: outbox.depth == 0)
    history = await store.subject_history("demo", "s3")
    assert len(history["history"]) == 250
    assert (forwarder.forwarded, forwarder.batches) == (2500, 3)
    late = make_record("late")
    await outbox.append(late, "x")  # wakes the idle forwarder at once
    await eventually(lambda: forwarder.forwarded == 2501, within=2)

    from prometheus_client import CollectorRegistry

    from gateway.recording.forwarder import ForwarderCollector

    registry = CollectorRegistry()
    registry.register(ForwarderCollector(forwarder))
    text = generate_latest(registry).decode()
    assert "consent_outbox_depth 0.0" in text
    assert "consent_forwarder_records_total 2501.0" in text
    assert "consent_forwarder_batches_total 4.0" in text
    assert "consent_outbox_oldest_age_seconds 0.0" in text
    assert "consent_outbox_syncs_total 0.0" in text  # process durability: no fsync
    assert "consent_outbox_sync_seconds_total 0.0" in text
    await forwarder.stop(drain=1)
    await outbox.close()
    await store.close()


async def test_unreachable_store_backs_off_with_jitter_up_to_the_cap(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / FILE_NAME, durability="process")
    await outbox.open()
    await outbox.append(make_record("waiting"), "x")
    dead_port = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/x", connect_timeout=1)
    forwarder = Forwarder(outbox, [dead_port], base_backoff=0.005, max_backoff=0.04)
    forwarder.start()
    await eventually(lambda: len(forwarder.delays) >= 8)
    started = time.monotonic()
    await forwarder.stop(drain=0.2)  # bounded: gives up on the backlog, keeps it
    assert time.monotonic() - started < 1.0
    assert forwarder.failures >= 8
    assert forwarder.last_error is not None
    assert "postgres" in forwarder.last_error
    assert all(d <= 0.04 for d in forwarder.delays)
    assert forwarder.delays[0] < 0.005 < max(forwarder.delays)  # it grew
    assert outbox.depth == 1  # nothing lost
    await outbox.close()
    await dead_port.close()


async def test_stop_drains_the_backlog_first(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / FILE_NAME, durability="process")
    await outbox.open()
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    forwarder = Forwarder(outbox, [store], batch_size=100)
    forwarder.start()
    await asyncio.gather(*(outbox.append(make_record(f"d{i}"), "x") for i in range(1000)))
    await forwarder.stop(drain=10)
    assert outbox.depth == 0
    assert forwarder.forwarded == 1000
    await outbox.close()
    await store.close()


async def test_undecodable_row_is_dead_lettered_not_retried_forever(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / FILE_NAME, durability="process")
    await outbox.open()
    good = make_record("good")
    await outbox.append(good, "x")
    await outbox.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        conn.execute("INSERT INTO outbox (record_id, queued_ns, body) VALUES ('bad', 0, x'00ff')")
    await outbox.open()
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    forwarder = Forwarder(outbox, [store])
    forwarder.start()
    await eventually(lambda: outbox.depth == 0)
    dead = await outbox.dead_letters()
    assert [(d.record_id, d.sink) for d in dead] == [("bad", "outbox")]
    assert "undecodable" in dead[0].reason
    assert (await store.subject_history("demo", "good"))["current"]["record_id"] == good.record_id
    await forwarder.stop(drain=1)
    await outbox.close()
    await store.close()


@pytest.mark.postgres
async def test_refused_record_goes_to_dead_letters_and_replays(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811
) -> None:
    settings = Settings(
        data_dir=tmp_path, store_url=pg_dsn, durability="process", node_id="n", shutdown_drain=5
    )
    service = RecordingService(settings)
    await service.start()
    poison = make_record("poison", user_agent="nul\x00")  # PostgreSQL text refuses NUL
    fine = [make_record(f"ok{i}") for i in range(3)]
    for r in [fine[0], poison, *fine[1:]]:
        await service.outbox.append(r, "x")
    assert service.forwarder is not None
    forwarder = service.forwarder
    await eventually(lambda: forwarder.forwarded == 3 and forwarder.dead_lettered == 1)
    await service.stop()

    status = await outbox_status(settings)
    assert status["depth"] == 0
    assert status["dead_letters"] == 1
    sample = status["dead_letter_sample"][0]
    assert (sample["record_id"], sample["sink"]) == (poison.record_id, "postgres")
    assert "refused" in sample["reason"]

    assert await outbox_replay(settings) == 1
    assert (await outbox_status(settings))["depth"] == 1
    service = RecordingService(settings)
    await service.start()
    assert service.forwarder is not None
    forwarder = service.forwarder
    await eventually(lambda: forwarder.dead_lettered == 1)  # still poison: back to dead letters
    for r in fine:
        history = await service.history("demo", r.subject_id)
        assert [h["record_id"] for h in history["history"]] == [r.record_id]
    await service.stop()
    assert (await outbox_status(settings))["dead_letters"] == 1


class RecordListSink:
    """A sink without the JSON fast path: it gets decoded records."""

    name = "list"

    def __init__(self) -> None:
        self.records: list[Record] = []

    async def open(self) -> None:
        return None

    async def write_batch(self, records: Sequence[Record]) -> None:
        self.records.extend(records)

    async def close(self) -> None:
        return None


async def test_plain_sinks_get_decoded_records_and_json_sinks_the_stored_json(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / FILE_NAME, durability="process")
    await outbox.open()
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    plain = RecordListSink()
    records = [make_record(f"m{i}", withdraws=None) for i in range(5)]
    for r in records:
        await outbox.append(r, "x")
    forwarder = Forwarder(outbox, [store, plain])
    forwarder.start()
    await eventually(lambda: outbox.depth == 0)
    await forwarder.stop(drain=1)
    assert sorted(plain.records, key=lambda r: r.record_id) == records
    for r in records:
        assert (await store.subject_history("demo", r.subject_id))["current"] == r.as_json()
    await outbox.close()
    await store.close()


class ObjectListSink(RecordListSink):
    """A sink on the decoded fast path: it gets each record's JSON object."""

    name = "objects"

    def __init__(self) -> None:
        super().__init__()
        self.objects: list[dict[str, object]] = []

    async def write_objects(self, objects: Sequence[Mapping[str, object]]) -> None:
        self.objects.extend(dict(o) for o in objects)


async def test_object_sinks_get_every_field_even_from_older_bodies(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / FILE_NAME, durability="process")
    await outbox.open()
    current = make_record("new")
    await outbox.append(current, "x")
    old = make_record("old", signals={})
    old_body = {k: v for k, v in old.as_json().items() if k not in ("signals", "withdraws")}
    await outbox.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:  # as an earlier version stored it
        conn.execute(
            "INSERT INTO outbox (record_id, queued_ns, body) VALUES (?, 0, ?)",
            (old.record_id, orjson.dumps(old_body).decode()),
        )
    await outbox.open()
    sink = ObjectListSink()
    assert isinstance(sink, ObjectSink)
    forwarder = Forwarder(outbox, [sink])
    forwarder.start()
    await eventually(lambda: outbox.depth == 0)
    await forwarder.stop(drain=1)
    await outbox.close()
    assert sink.objects == [current.as_json(), old.as_json()]
    assert sink.records == []  # write_batch is not used when write_objects is there


async def test_full_disk_on_ack_is_logged_counted_retried_and_recovers_without_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The threat (security review §2): with the outbox's disk full, a failed ack killed the
    # forwarder silently (no log, no metric, nothing forwarded until a restart) and then
    # made shutdown fail. Here the disk really fills: SQLite itself answers "disk is full".
    with small_disk(tmp_path / "disk") as disk:
        outbox = Outbox(disk / FILE_NAME, durability="process", checkpoint_interval=3600)
        await outbox.open()
        store = SqliteStore(tmp_path / "store.sqlite3")  # healthy, on another disk
        await store.open()
        records = [make_record(f"f{i}") for i in range(300)]
        await asyncio.gather(*(outbox.append(r, "x") for r in records))
        # Two rounds: the second, idle, truncates the WAL file, so the ack needs new space.
        await outbox.checkpointer.round(outbox.held)
        await outbox.checkpointer.round(outbox.held)
        ballast = fill_disk(disk)
        forwarder = Forwarder(outbox, [store], base_backoff=0.01, max_backoff=0.1)
        registry = CollectorRegistry()
        registry.register(ForwarderCollector(forwarder))
        with caplog.at_level(logging.ERROR, logger="gateway.forwarder"):
            forwarder.start()
            await eventually(lambda: forwarder.outbox_failures >= 3)
        assert forwarder.running  # alive, retrying
        assert forwarder.last_error is not None and "disk is full" in forwarder.last_error
        logged = [r.getMessage() for r in caplog.records if r.name == "gateway.forwarder"]
        assert any("acknowledging" in m and "disk is full" in m for m in logged)
        assert "consent_forwarder_outbox_failures_total" in generate_latest(registry).decode()
        assert (await store.subject_history("demo", "f0"))["current"] is not None  # delivered
        assert outbox.depth == 300  # but not forgotten before the ack commits

        ballast.unlink()  # space comes back: forwarding resumes without a restart
        await eventually(lambda: outbox.depth == 0)
        assert forwarder.last_error is None
        late = make_record("late")
        await outbox.append(late, "x")
        await eventually(lambda: forwarder.forwarded >= 301)

        # Full again with delivered records unacknowledged: shutdown still completes.
        await forwarder.stop(drain=5)
        await asyncio.gather(*(outbox.append(make_record(f"g{i}"), "x") for i in range(50)))
        await outbox.checkpointer.round(outbox.held)
        await outbox.checkpointer.round(outbox.held)
        ballast = fill_disk(disk)
        forwarder.start()
        failures = forwarder.outbox_failures
        await eventually(lambda: forwarder.outbox_failures > failures)
        started = time.monotonic()
        await forwarder.stop(drain=0.3)  # raises nothing
        await outbox.close()
        assert time.monotonic() - started < 5
        ballast.unlink()
        again = Outbox(disk / FILE_NAME, durability="process")
        await again.open()
        assert again.depth == 50  # nothing lost: delivered again at the next start
        await again.close()
        await store.close()
