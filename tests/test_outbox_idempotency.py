"""Idempotency keys: scoped to the subject and the request's content; a retry replays, on
whichever worker of the node takes it."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from gateway.core.errors import BadRequest
from gateway.recording.outbox import peer_keys
from gateway.recording.outbox.group_commit import Outbox
from gateway.recording.outbox.items import Appended
from gateway.recording.outbox.peer_keys import PeerKeys
from gateway.recording.outboxes import WorkerRole, own_dir, peer_outboxes
from tests.helpers import opened
from tests.pg import make_record


async def test_same_idempotency_key_returns_the_original(tmp_path: Path) -> None:
    outbox = await opened(tmp_path)
    first = await outbox.append(make_record("a", key="k1"), "receipt-1")
    # Concurrent retries land in one group commit: still one record.
    retries = await asyncio.gather(
        *(outbox.append(make_record("a", key="k1"), "r") for _ in range(5))
    )
    other_site = await outbox.append(make_record("a", key="k1", site="shop"), "receipt-2")
    assert all(
        (a.record_id, a.receipt, a.duplicate) == (first.record_id, "receipt-1", True)
        for a in retries
    )
    assert not other_site.duplicate
    assert other_site.record_id != first.record_id
    assert outbox.depth == 2
    await outbox.close()


async def test_another_subjects_key_never_returns_that_subjects_receipt(tmp_path: Path) -> None:
    outbox = await opened(tmp_path)
    alice = await outbox.append(make_record("alice", key="order-12345"), "receipt-alice")
    # Mallory knows (or guesses) alice's key: she gets a record of her own, never alice's.
    mallory = await outbox.append(make_record("mallory", key="order-12345"), "receipt-mallory")
    assert not mallory.duplicate
    assert (mallory.record_id, mallory.receipt) != (alice.record_id, alice.receipt)
    assert mallory.receipt == "receipt-mallory"
    # In one group too.
    both = await asyncio.gather(
        outbox.append(make_record("bob", key="shared"), "receipt-bob"),
        outbox.append(make_record("carol", key="shared"), "receipt-carol"),
    )
    assert [(a.receipt, a.duplicate) for a in both] == [
        ("receipt-bob", False),
        ("receipt-carol", False),
    ]
    assert outbox.depth == 4
    stored = {i.record().subject_id for i in await outbox.claim(10)}
    assert stored == {"alice", "mallory", "bob", "carol"}  # every choice was stored
    await outbox.close()


async def test_same_key_with_a_different_choice_is_refused_never_silently_dropped(
    tmp_path: Path,
) -> None:
    outbox = await opened(tmp_path)
    first = await outbox.append(make_record("alice", key="k", analytics=True), "receipt-1")
    with pytest.raises(BadRequest) as info:
        await outbox.append(make_record("alice", key="k", analytics=False), "receipt-2")
    assert (info.value.status_code, info.value.code) == (409, "idempotency_key_reused")
    # The same in one group: the first use wins, the different one is refused.
    answers = await asyncio.gather(
        outbox.append(make_record("bob", key="k", analytics=True), "receipt-3"),
        outbox.append(make_record("bob", key="k", analytics=False), "receipt-4"),
        outbox.append(make_record("bob", key="k", analytics=True), "receipt-5"),
        return_exceptions=True,
    )
    assert isinstance(answers[0], Appended) and not answers[0].duplicate
    assert isinstance(answers[1], BadRequest) and answers[1].status_code == 409
    assert isinstance(answers[2], Appended) and answers[2].duplicate
    assert answers[2].receipt == "receipt-3"
    # And the same content still replays, after a restart too.
    await outbox.close()
    outbox = await opened(tmp_path)
    again = await outbox.append(make_record("alice", key="k", analytics=True), "receipt-6")
    assert (again.record_id, again.receipt, again.duplicate) == (
        first.record_id,
        "receipt-1",
        True,
    )
    assert outbox.depth == 2  # alice's first and bob's first; nothing refused was stored
    await outbox.close()


def _receipt_naming(subject: str) -> str:
    payload = base64.urlsafe_b64encode(orjson.dumps({"s": "demo", "u": subject}))
    return f"v1.{payload.decode().rstrip('=')}.signature"


async def test_keys_kept_by_an_older_outbox_stay_with_their_subject(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with sqlite3.connect(path) as conn:  # the table as it was, keyed per site only
        conn.execute(
            "CREATE TABLE idempotency (site TEXT NOT NULL, key TEXT NOT NULL, "
            "record_id TEXT NOT NULL, recorded_at TEXT NOT NULL, receipt TEXT NOT NULL, "
            "created_ns INTEGER NOT NULL, PRIMARY KEY (site, key)) WITHOUT ROWID"
        )
        conn.execute(
            "INSERT INTO idempotency VALUES ('demo', 'k', 'rid-1', 'at-1', ?, ?)",
            (_receipt_naming("alice"), time.time_ns()),
        )
    outbox = await opened(tmp_path)
    retry = await outbox.append(make_record("alice", key="k"), "new-receipt")
    assert (retry.record_id, retry.duplicate) == ("rid-1", True)
    other = await outbox.append(make_record("mallory", key="k"), "receipt-mallory")
    assert not other.duplicate
    assert other.receipt == "receipt-mallory"
    await outbox.close()


async def worker_outboxes(data: Path, count: int = 2) -> list[Outbox]:
    """The outboxes of ``count`` workers of one node, each reading its peers' keys."""
    role = [WorkerRole(i, count) for i in range(1, count + 1)]
    outboxes = []
    for r in role:
        folder = own_dir(data, r)
        folder.mkdir(parents=True, exist_ok=True)
        outboxes.append(await opened(folder, peers=PeerKeys(peer_outboxes(data, r))))
    return outboxes


async def test_a_retry_taken_by_another_worker_is_answered_from_the_first(tmp_path: Path) -> None:
    """Duplicate threat (issue 15): under ``serve --workers N`` a retry comes on a new
    connection, which the kernel may give to any worker; each worker keeps its keys in its
    own outbox, so the retry recorded the choice a second time. The group commit now looks a
    key it lacks up in the other workers' outboxes: same record, same receipt, one row."""
    one, two = await worker_outboxes(tmp_path / "data")
    first = await one.append(make_record("alice", key="k1", analytics=True), "receipt-1")
    retry = await two.append(make_record("alice", key="k1", analytics=True), "receipt-2")
    assert (retry.record_id, retry.receipt, retry.duplicate) == (first.record_id, "receipt-1", True)
    # Another choice under the key is refused on the other worker too, and stores nothing.
    with pytest.raises(BadRequest) as info:
        await two.append(make_record("alice", key="k1", analytics=False), "receipt-3")
    assert info.value.status_code == 409
    # The key is the subject's: another subject's use of it on either worker is its own.
    mallory = await two.append(make_record("mallory", key="k1"), "receipt-mallory")
    assert not mallory.duplicate and mallory.receipt == "receipt-mallory"
    # And back: a key the second worker made answers a retry on the first.
    back = await one.append(make_record("mallory", key="k1"), "receipt-4")
    assert (back.record_id, back.duplicate) == (mallory.record_id, True)
    assert (one.depth, two.depth) == (1, 1)  # alice on one, mallory on two: nothing twice
    for outbox in (one, two):
        await outbox.close()


async def test_keys_expire_after_a_day_here_and_on_the_other_workers(tmp_path: Path) -> None:
    one, two = await worker_outboxes(tmp_path / "data")
    await one.append(make_record("alice", key="old"), "receipt-1")
    await one.append(make_record("bob", key="old"), "receipt-2")
    day_ago = time.time_ns() - 24 * 3600 * 1_000_000_000 - 1
    with sqlite3.connect(one.path) as conn:  # not pruned yet (pruning runs every 5 minutes)
        conn.execute("UPDATE idempotency SET created_ns = ?", (day_ago,))
    assert not (await one.append(make_record("alice", key="old"), "r")).duplicate
    assert not (await two.append(make_record("bob", key="old"), "r")).duplicate
    for outbox in (one, two):
        await outbox.close()


async def test_a_peer_outbox_missing_or_unreadable_never_refuses_an_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Availability threat: a worker that has not made its outbox yet, or whose file is
    broken, must not turn its peers' keyed appends into errors: they are recorded."""
    data = tmp_path / "data"
    role = WorkerRole(1, 3)
    folder = own_dir(data, role)
    folder.mkdir(parents=True)
    broken = own_dir(data, WorkerRole(3, 3)) / "outbox.sqlite3"
    broken.parent.mkdir()
    broken.write_bytes(b"this is not a database" * 100)
    outbox = await opened(folder, peers=PeerKeys(peer_outboxes(data, role)))
    with caplog.at_level("WARNING", logger="gateway.outbox"):
        answers = [await outbox.append(make_record("alice", key=f"k{i}"), "r") for i in range(3)]
    assert [a.duplicate for a in answers] == [False] * 3 and outbox.depth == 3
    warned = [r for r in caplog.records if "idempotency keys of" in r.getMessage()]
    assert len(warned) == 1  # once a minute, not once per append
    await outbox.close()


def _remove(database: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)


async def test_a_replaced_peer_outbox_is_read_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer's outbox quarantined and made anew (database.py) is a new file: its keys are
    read from that file, not from the one the connection first opened."""
    monkeypatch.setattr(peer_keys, "_RECHECK_S", 0.0)
    one, two = await worker_outboxes(tmp_path / "data")
    await one.append(make_record("alice", key="k"), "receipt-1")
    assert (await two.append(make_record("alice", key="k"), "r")).duplicate
    await one.close()
    _remove(one.path)
    one = await opened(one.path.parent)
    first = await one.append(make_record("carol", key="k"), "receipt-carol")
    retry = await two.append(make_record("carol", key="k"), "r")
    assert (retry.record_id, retry.duplicate) == (first.record_id, True)
    for outbox in (one, two):
        await outbox.close()
