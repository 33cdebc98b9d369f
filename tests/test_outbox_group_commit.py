"""The outbox's group commit: append, claim, ack, bounds, durability, the in-memory hand-over."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.core.errors import Unavailable
from gateway.recording.outbox.group_commit import Outbox
from gateway.recording.outbox.items import OutboxItem
from tests.helpers import opened
from tests.pg import make_record


async def test_append_claim_ack_and_reopen(tmp_path: Path) -> None:
    outbox = await opened(tmp_path)
    records = [make_record(f"s{i}") for i in range(5)]
    for r in records:
        answer = await outbox.append(r, f"receipt-{r.record_id}")
        assert (answer.record_id, answer.duplicate) == (r.record_id, False)
    assert outbox.depth == 5
    assert outbox.oldest_age() is not None
    claimed = await outbox.claim(3)
    assert [i.record() for i in claimed] == records[:3]
    assert [i.record_id for i in await outbox.claim(10)] == [r.record_id for r in records[3:]]
    assert await outbox.claim(10) == []
    await outbox.ack(i.seq for i in claimed)
    assert outbox.depth == 2
    await outbox.close()

    again = await opened(tmp_path)
    assert again.depth == 2
    assert [i.record() for i in await again.claim(10)] == records[3:]
    await again.close()


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    outbox = await opened(tmp_path, durability="power")
    records = [make_record(f"s{i}") for i in range(300)]
    answers = await asyncio.gather(*(outbox.append(r, "x") for r in records))
    assert {a.record_id for a in answers} == {r.record_id for r in records}
    assert outbox.commits < 100  # one fsync'd commit serves many waiting requests
    await outbox.close()
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 300


async def test_a_group_larger_than_one_statement_is_stored_whole_and_in_order(
    tmp_path: Path,
) -> None:
    outbox = await opened(tmp_path, durability="process")
    records = [make_record(f"s{i % 700}", key=f"k{i % 700}") for i in range(1201)]
    answers = await asyncio.gather(*(outbox.append(r, "x") for r in records))
    assert outbox.commits == 1  # one group, written in several INSERT statements
    assert sum(not a.duplicate for a in answers) == outbox.depth == 700
    claimed = await outbox.claim(2000)
    assert [i.record() for i in claimed] == records[:700]
    assert [a.record_id for a in answers[700:]] == [r.record_id for r in records[:501]]
    await outbox.close()


@pytest.mark.parametrize(("durability", "fsyncs"), [("power", True), ("process", False)])
async def test_durability_modes(tmp_path: Path, durability: str, fsyncs: bool) -> None:
    outbox = await opened(tmp_path, durability=durability)
    mode = await outbox._submit(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
    assert mode == "wal"
    await asyncio.gather(*(outbox.append(make_record(f"s{i}"), "x") for i in range(50)))
    # power: every answered group was fsynced first; process: the WAL write is enough.
    assert (outbox.syncs > 0) is fsyncs
    assert outbox.syncs <= outbox.commits
    assert (outbox.sync_seconds > 0) is fsyncs  # the wait operators see in /metrics
    await outbox.close()


async def test_full_outbox_answers_unavailable_and_never_drops(tmp_path: Path) -> None:
    outbox = await opened(tmp_path, max_records=3, retry_after=7)
    for i in range(3):
        await outbox.append(make_record(f"s{i}"), "x")
    with pytest.raises(Unavailable) as info:
        await outbox.append(make_record("overflow"), "x")
    assert info.value.retry_after == 7
    claimed = await outbox.claim(1)
    await outbox.ack([claimed[0].seq])
    await outbox.append(make_record("fits-again"), "x")
    assert outbox.depth == 3
    await outbox.close()


async def test_cancelled_request_still_commits(tmp_path: Path) -> None:
    outbox = await opened(tmp_path)
    task = asyncio.create_task(outbox.append(make_record("gone"), "x"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await outbox.close()
    reopened = await opened(tmp_path)
    assert [i.record().subject_id for i in await reopened.claim(5)] == ["gone"]
    await reopened.close()


async def test_closed_outbox_refuses(tmp_path: Path) -> None:
    outbox = await opened(tmp_path)
    await outbox.close()
    with pytest.raises(Unavailable):
        await outbox.append(make_record(), "x")


# -- handing committed records to the forwarder from memory ------------------------------


async def claim_all(outbox: Outbox, limit: int = 7) -> list[OutboxItem]:
    claimed: list[OutboxItem] = []
    while part := await outbox.claim(limit):
        claimed += part
    return claimed


def row_seqs(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT record_id, seq FROM outbox").fetchall())


@pytest.mark.parametrize("durability", ["power", "process"])
async def test_committed_records_are_claimed_from_memory_with_their_true_seqs(
    tmp_path: Path, durability: str
) -> None:
    outbox = await opened(tmp_path, durability=durability)
    records = [make_record(f"s{i}") for i in range(1100)]  # more than one INSERT statement
    await asyncio.gather(*(outbox.append(r, "x") for r in records))
    claimed = await claim_all(outbox, limit=300)
    assert [i.record_id for i in claimed] == [r.record_id for r in records]
    assert all(i.obj == r.as_json() for i, r in zip(claimed, records, strict=True))
    assert {i.record_id: i.seq for i in claimed} == row_seqs(tmp_path / "outbox.sqlite3")
    await outbox.ack(i.seq for i in claimed)
    assert outbox.depth == 0
    await outbox.close()


async def test_a_record_waiting_for_its_fsync_is_not_claimed(tmp_path: Path) -> None:
    outbox = await opened(tmp_path, durability="power")
    assert outbox._fsyncer is not None
    held: list[Callable[[OSError | None], None]] = []
    asked = asyncio.Event()
    real = outbox._fsyncer.request

    def hold(done: Callable[[OSError | None], None]) -> None:
        held.append(done)
        asked.set()

    outbox._fsyncer.request = hold  # type: ignore[method-assign]
    append = asyncio.ensure_future(outbox.append(make_record("slow-disk"), "x"))
    await asyncio.wait_for(asked.wait(), 5)  # committed to the WAL, fsync not answered yet
    assert outbox.depth == 1
    assert await outbox.claim(10) == []  # never delivered before it is durable
    outbox._fsyncer.request = real  # type: ignore[method-assign]
    held[0](None)
    await append
    assert [i.record_id for i in await outbox.claim(10)] != []
    await outbox.close()


async def test_one_fsync_in_flight_and_no_answer_before_its_own_fsync(tmp_path: Path) -> None:
    """Threat: a request answered 201 before its record is on disk. With one fsync in flight
    the appends that arrive while it runs wait uncommitted and form the next group (which is
    what makes groups grow under load); each is answered only after the fsync that followed
    its own commit, never after the one that was already running."""
    outbox = await opened(tmp_path, durability="power")
    assert outbox._fsyncer is not None
    held: list[Callable[[OSError | None], None]] = []
    asked = asyncio.Event()

    def hold(done: Callable[[OSError | None], None]) -> None:
        held.append(done)
        asked.set()

    outbox._fsyncer.request = hold  # type: ignore[method-assign]
    first = asyncio.ensure_future(outbox.append(make_record("first"), "x"))
    await asyncio.wait_for(asked.wait(), 5)
    asked.clear()
    later = [asyncio.ensure_future(outbox.append(make_record(f"later{i}"), "x")) for i in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(held) == 1 and outbox.commits == 1  # the later ones wait, uncommitted
    assert len(row_seqs(tmp_path / "outbox.sqlite3")) == 1
    held[0](None)  # the first group's fsync ends: it is answered, the rest commit as one group
    await first
    await asyncio.wait_for(asked.wait(), 5)
    assert len(held) == 2 and outbox.commits == 2
    assert len(row_seqs(tmp_path / "outbox.sqlite3")) == 6
    assert not any(f.done() for f in later)  # committed, but not yet durable: no answer
    held[1](None)
    assert {a.record_id for a in await asyncio.gather(*later)} == set(
        row_seqs(tmp_path / "outbox.sqlite3")
    ) - {first.result().record_id}
    assert outbox.syncs == 2
    await outbox.close()


async def test_backlog_then_memory_then_replayed_rows_each_claimed_once(tmp_path: Path) -> None:
    outbox = await opened(tmp_path, durability="process")
    old = [make_record(f"old{i}") for i in range(5)]
    for r in old:
        await outbox.append(r, "x")
    await outbox.close()
    outbox = await opened(tmp_path, durability="process")  # a backlog from the last run
    outbox.rewind()
    new = [make_record(f"new{i}") for i in range(5)]
    await asyncio.gather(*(outbox.append(r, "x") for r in new))
    first = await claim_all(outbox, limit=3)
    assert [i.record_id for i in first] == [r.record_id for r in old + new]
    # A dead letter replayed: a row nobody handed over, between two groups in memory.
    await outbox.dead_letter([(first[0], "sink", "refused")])
    await outbox.replay()
    later = [make_record(f"later{i}") for i in range(3)]
    await asyncio.gather(*(outbox.append(r, "x") for r in later))
    second = await claim_all(outbox, limit=2)
    assert [i.record_id for i in second] == [first[0].record_id] + [r.record_id for r in later]
    await outbox.close()


async def test_memory_is_bounded_and_the_database_serves_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.recording.outbox.group_commit.FRESH_MAX", 50)
    outbox = await opened(tmp_path, durability="process")
    records = [make_record(f"s{i}") for i in range(120)]
    for start in range(0, 120, 30):  # a forwarder that is not claiming meanwhile
        await asyncio.gather(*(outbox.append(r, "x") for r in records[start : start + 30]))
    assert len(outbox._fresh) <= 50
    claimed = await claim_all(outbox, limit=40)
    assert [i.record_id for i in claimed] == [r.record_id for r in records]
    await outbox.close()
