"""The node's recent idempotency keys (recording/recent_keys.py): what one worker publishes,
another finds, whole or not at all.

Threats: a retry another worker takes recorded a second time (issue 15); a slot read while
its worker writes it (or left half written by a worker killed with -9) answering with a mix
of two records; another subject's key answering this one; the table growing with keys.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from gateway.recording import keyed_appends
from gateway.recording.outbox.idempotency import key_digest as digest
from gateway.recording.recent_keys import _STRIDE, TTL_NS, Earlier, RecentKeys

NOW = time.time_ns()


def recorded(keys: RecentKeys, region: int, key: bytes, since_ns: int) -> Earlier | None:
    """The record (not a claim) another worker than ``region``'s published for the key."""
    made = [f.entry for f in keys.others(region, key, since_ns) if not f.entry.pending]
    return made[0] if made else None


ENTRY = Earlier("ab" * 16, "0192f3a4-5b6c-7d8e-9f01-23456789abcd", NOW // 1000, "cd" * 32)


def test_a_key_one_worker_publishes_is_found_by_another() -> None:
    keys = RecentKeys(count=2, slots=64)
    key = digest("demo", "subject-a", "retry-1")
    pid = os.fork()
    if pid == 0:  # worker 2 records the choice and publishes its key
        keys.publish(2, key, ENTRY, NOW)
        os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert recorded(keys, 1, key, NOW - TTL_NS) == ENTRY  # worker 1 answers the retry from it
    assert recorded(keys, 2, key, NOW - TTL_NS) is None  # a worker's own keys: its outbox's
    # The key belongs to its subject and site: the same key of another is not found.
    assert recorded(keys, 1, digest("demo", "subject-b", "retry-1"), NOW - TTL_NS) is None
    assert recorded(keys, 1, digest("shop", "subject-a", "retry-1"), NOW - TTL_NS) is None
    assert recorded(keys, 1, key, NOW + 1) is None  # older than asked for: expired


def test_a_slot_being_written_or_torn_is_a_miss_never_a_mix() -> None:
    keys = RecentKeys(count=2, slots=4)  # one set: the key is in one of its four slots
    key = digest("demo", "subject-a", "k")
    keys.publish(1, key, ENTRY, NOW)
    memory = keys._memory
    at = next(w * _STRIDE for w in range(4) if memory[w * _STRIDE + 8 : w * _STRIDE + 24] == key)
    seq = int.from_bytes(memory[at : at + 8], "little")
    memory[at : at + 8] = (seq + 1).to_bytes(8, "little")  # odd: its worker is writing it
    assert recorded(keys, 2, key, 0) is None
    memory[at : at + 8] = seq.to_bytes(8, "little")
    assert recorded(keys, 2, key, 0) == ENTRY
    memory[at + 60] ^= 0xFF  # a byte of the entry changed under a reader: the checksum shows
    assert recorded(keys, 2, key, 0) is None
    # A worker killed mid-write left the slot odd; its next publish makes it whole again.
    memory[at : at + 8] = (seq + 1).to_bytes(8, "little")
    keys.publish(1, key, ENTRY, NOW)
    assert recorded(keys, 2, key, 0) == ENTRY
    assert int.from_bytes(memory[at : at + 8], "little") % 2 == 0


def test_a_set_keeps_its_four_newest_keys_in_bounded_memory() -> None:
    """Memory threat: every keyed record publishes; the table never grows, the oldest of a
    set gives way, and a key published again keeps its one slot."""
    keys = RecentKeys(count=2, slots=4)
    assert len(keys._memory) == 2 * 4 * _STRIDE
    made = [digest("demo", f"subject-{i}", "k") for i in range(6)]
    for i, key in enumerate(made):
        keys.publish(1, key, ENTRY, NOW + i)
    keys.publish(1, made[5], ENTRY, NOW + 9)  # again: the same slot, not a second one
    assert [recorded(keys, 2, key, 0) is not None for key in made] == [False, False] + [True] * 4


def test_the_regions_share_a_budget_past_eight_workers() -> None:
    """Memory threat: a worker maps its peers' regions as it reads them, so the table's size
    is bounded for the node: 4 MiB a worker up to 8 workers, then a share of 32 MiB."""
    assert [RecentKeys(n).slots for n in (1, 2, 8, 16, 64)] == [32_768] * 3 + [16_384, 4_096]
    assert len(RecentKeys(16)._memory) == 32 * 1024 * 1024


def test_nonsense_sizes_are_refused() -> None:
    for count, slots in ((0, 4), (1, 0), (1, 6)):
        with pytest.raises(ValueError, match="count must be at least 1"):
            RecentKeys(count, slots)


def test_a_claim_is_no_record_and_is_dropped_only_by_its_own_request() -> None:
    """Two copies in flight on two workers: a claim says a worker is recording the key now
    (the other waits for its record); dropping it must never drop a record, nor a later
    request's claim."""
    keys = RecentKeys(count=2, slots=64)
    key = digest("demo", "subject-a", "k")
    keys.claim(1, key, ENTRY.fingerprint, NOW)
    assert recorded(keys, 2, key, 0) is None  # no record yet
    (claimed,) = keys.others(2, key, 0)
    assert (claimed.made_ns, claimed.region, claimed.entry.pending) == (NOW, 1, True)
    keys.retract(1, key, NOW - 1)  # another request's: not this claim
    assert keys.others(2, key, 0)[0].entry.pending
    keys.retract(1, key, NOW)
    assert keys.others(2, key, 0) == []  # dropped: made at time 0, older than any lookup
    keys.claim(1, key, ENTRY.fingerprint, NOW + 5)
    keys.publish(1, key, ENTRY, NOW + 6)  # the record made: the claim becomes it
    keys.retract(1, key, NOW + 5)  # a late retract of that claim leaves the record
    assert recorded(keys, 2, key, 0) == ENTRY


async def test_a_claim_ahead_is_waited_for_briefly_and_a_dead_workers_never_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Availability threat: a worker killed while recording leaves its claim pending; the
    other worker waits for it at most CLAIM_WAIT_S, and not at all once it is that old. A
    claim made after this worker's own is never waited for (the two never wait for each
    other). A claim that turns into a record while waited for answers with the record."""
    monkeypatch.setattr(keyed_appends, "CLAIM_WAIT_S", 0.2)
    keys = RecentKeys(count=2, slots=64)
    key = digest("demo", "subject-a", "k")
    elsewhere = keyed_appends.KeyedAppends._elsewhere
    now = time.time_ns()
    keys.claim(2, key, ENTRY.fingerprint, now - 10**9)  # made 1 s ago, older than the wait
    started = time.monotonic()
    assert await elsewhere(keys, 1, key, 0, (now, 1)) is None
    assert time.monotonic() - started < 0.05  # a dead worker's claim: not waited for
    keys.claim(2, key, ENTRY.fingerprint, now + 10**6)  # after this worker's own claim
    assert await elsewhere(keys, 1, key, 0, (now, 1)) is None
    assert time.monotonic() - started < 0.1
    keys.claim(2, key, ENTRY.fingerprint, time.time_ns())  # ahead of a claim made now
    started = time.monotonic()
    assert await elsewhere(keys, 1, key, 0, (time.time_ns(), 1)) is None  # waited, in vain
    assert 0.15 < time.monotonic() - started < 1.0
    keys.claim(2, key, ENTRY.fingerprint, time.time_ns())

    async def record_soon() -> None:
        await asyncio.sleep(0.02)
        keys.publish(2, key, ENTRY, time.time_ns())

    recording = asyncio.create_task(record_soon())
    assert await elsewhere(keys, 1, key, 0, (time.time_ns(), 1)) == ENTRY
    await recording
