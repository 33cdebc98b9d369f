"""Idempotency keys: scoped to the subject and the request's content; a retry replays.

The outbox keeps a key's record id, time and content hash (never the receipt, nor the key or
subject in the clear): a retry from an earlier group is answered with them and an empty
receipt, which the caller signs again (tests/test_records_idempotency.py proves the same
receipt comes back over HTTP); a retry inside the same group gets its first copy's answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from gateway.core.errors import BadRequest
from gateway.core.record_codec import Record, encode_record
from gateway.recording.outbox import idempotency
from gateway.recording.outbox.group_commit import Outbox
from gateway.recording.outbox.items import Appended
from tests.helpers import opened
from tests.pg import make_record


def _hash(record: Record) -> str:
    """The content hash the outbox keeps of a record appended without a body."""
    return hashlib.sha256(encode_record(record)).hexdigest()


async def test_same_idempotency_key_returns_the_original(tmp_path: Path) -> None:
    outbox = await opened(tmp_path)
    original = make_record("a", key="k1")
    first = await outbox.append(original, "receipt-1")
    # Concurrent retries land in one group commit: still one record.
    retries = await asyncio.gather(
        *(outbox.append(make_record("a", key="k1"), "r") for _ in range(5))
    )
    other_site = await outbox.append(make_record("a", key="k1", site="shop"), "receipt-2")
    first_hash = _hash(original)
    assert all(
        (a.record_id, a.recorded_at, a.receipt, a.duplicate, a.content_hash)
        == (first.record_id, first.recorded_at, "", True, first_hash)
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
    # Nothing of a key is kept in the clear: neither the key nor the subject.
    with sqlite3.connect(outbox.path) as conn:
        kept = conn.execute("SELECT * FROM idempotency_keys").fetchall()
    assert len(kept) == 2 and not any(
        isinstance(v, str) and ("order-12345" in v or "alice" in v) for row in kept for v in row
    )
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
    original = make_record("alice", key="k", analytics=True)
    first = await outbox.append(original, "receipt-1")
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
    assert (again.record_id, again.receipt, again.duplicate, again.content_hash) == (
        first.record_id,
        "",
        True,
        _hash(original),
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
    assert (retry.record_id, retry.receipt, retry.duplicate) == (
        "rid-1", _receipt_naming("alice"), True
    )  # fmt: skip
    other = await outbox.append(make_record("mallory", key="k"), "receipt-mallory")
    assert not other.duplicate
    assert other.receipt == "receipt-mallory"
    await outbox.close()


async def test_keys_of_the_table_before_digests_are_carried_over(tmp_path: Path) -> None:
    """An outbox made before keys were kept by digest: its keys still answer for their day
    (with the receipts they kept, and 409 for another choice), and the old table, which
    held subjects and keys in the clear, is gone."""
    path = tmp_path / "outbox.sqlite3"
    record = make_record("alice", key="k")
    printed = idempotency.fingerprint(record)
    with sqlite3.connect(path) as conn:  # the table as it was, keyed in the clear
        conn.execute(
            "CREATE TABLE idempotency (site TEXT NOT NULL, subject_id TEXT NOT NULL, "
            "key TEXT NOT NULL, fingerprint TEXT, record_id TEXT NOT NULL, "
            "recorded_at TEXT NOT NULL, receipt TEXT NOT NULL, created_ns INTEGER NOT NULL, "
            "PRIMARY KEY (site, subject_id, key)) WITHOUT ROWID"
        )
        conn.execute(
            "INSERT INTO idempotency VALUES ('demo', 'alice', 'k', ?, 'rid-1', 'at-1', "
            "'receipt-kept', ?)",
            (printed, time.time_ns()),
        )
        # Expired already (not pruned yet): not carried over.
        conn.execute(
            "INSERT INTO idempotency VALUES ('demo', 'bob', 'k', ?, 'rid-2', 'at-2', "
            "'receipt-bob', ?)",
            (printed, _day_ago()),
        )
    outbox = await opened(tmp_path)
    retry = await outbox.append(make_record("alice", key="k"), "new-receipt")
    assert (retry.record_id, retry.recorded_at, retry.receipt, retry.duplicate) == (
        "rid-1", "at-1", "receipt-kept", True
    )  # fmt: skip
    with pytest.raises(BadRequest) as refused:
        await outbox.append(make_record("alice", key="k", analytics=False), "r")
    assert refused.value.status_code == 409
    bob = await outbox.append(make_record("bob", key="k"), "receipt-bob-now")
    assert not bob.duplicate and bob.receipt == "receipt-bob-now"
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "idempotency" not in tables and "idempotency_keys" in tables
    await outbox.close()


async def _keys_expiring(tmp_path: Path, made: int, expired: int) -> Outbox:
    """An outbox holding ``made`` keys of subjects s0, s1, … whose first ``expired`` were
    made more than a day ago."""
    outbox = await opened(tmp_path)
    for i in range(made):
        await outbox.append(make_record(f"s{i}", key=f"k{i}"), f"receipt-{i}")
    with sqlite3.connect(outbox.path) as conn:
        conn.execute(
            "UPDATE idempotency_keys SET created_ns = ? WHERE id <= ?", (_day_ago(), expired)
        )
    return outbox


def _day_ago() -> int:
    return time.time_ns() - idempotency.TTL_NS - 1


async def test_pruning_reads_only_the_expired_head(tmp_path: Path) -> None:
    """Keys are pruned oldest first, a day after they were made, the rest kept."""
    outbox = await _keys_expiring(tmp_path, made=5, expired=3)
    assert await outbox.prune() == 3
    assert await outbox.prune() == 0
    retry = await outbox.append(make_record("s4", key="k4"), "again")
    assert retry.duplicate  # the young key still answers
    with sqlite3.connect(outbox.path) as conn:  # all expired: all pruned
        conn.execute("UPDATE idempotency_keys SET created_ns = ?", (_day_ago(),))
    assert await outbox.prune() == 2
    await outbox.close()


async def test_keys_expire_after_a_day_even_before_they_are_pruned(tmp_path: Path) -> None:
    outbox = await opened(tmp_path)
    await outbox.append(make_record("alice", key="old"), "receipt-1")
    with sqlite3.connect(outbox.path) as conn:  # not pruned yet (pruning runs every 5 minutes)
        conn.execute("UPDATE idempotency_keys SET created_ns = ?", (_day_ago(),))
    again = await outbox.append(make_record("alice", key="old"), "receipt-2")
    assert not again.duplicate and again.receipt == "receipt-2"  # a new record, kept anew
    retry = await outbox.append(make_record("alice", key="old"), "receipt-3")
    assert (retry.record_id, retry.duplicate) == (again.record_id, True)
    await outbox.close()


async def test_pruning_forgets_a_chunk_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threat: five minutes of keys forgotten in one statement on the loop stalled every
    request for its length (165-285 ms at 30,000 keys); pruning now deletes a chunk at a
    time and lets the loop run between chunks."""
    monkeypatch.setattr(idempotency, "PRUNE_CHUNK", 2)
    outbox = await _keys_expiring(tmp_path, made=7, expired=5)
    statements: list[str] = []
    assert outbox._conn is not None
    outbox._conn.set_trace_callback(statements.append)
    pruning = asyncio.create_task(outbox.prune())
    appended = await outbox.append(make_record("s9", key="k9"), "receipt-9")
    assert await pruning == 5 and not appended.duplicate
    order = [
        "delete" if sql.startswith("DELETE FROM idempotency_keys") else "append"
        for sql in statements
        if sql.startswith(("DELETE FROM idempotency_keys", "INSERT INTO outbox"))
    ]
    # 2, 2, then 1 (the last chunk short of the limit ends it), and the append made while
    # pruning ran committed between two chunks, not after the last.
    assert order.count("delete") == 3
    assert order.index("append") < len(order) - 1 - order[::-1].index("delete")
    for i in (5, 6):  # the young keys still answer
        assert (await outbox.append(make_record(f"s{i}", key=f"k{i}"), "again")).duplicate
    await outbox.close()
