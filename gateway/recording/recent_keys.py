"""The node's recent idempotency keys, so a retry another worker takes is answered, not recorded.

Each worker keeps its keys in its own outbox, committed with their records (outbox/
idempotency.py), for a day. Under ``serve --workers N`` a retry comes on a new connection,
which the kernel may give to any worker, and that worker's outbox does not hold the key: the
choice was recorded a second time. So every worker also publishes the keys it records in
memory the supervisor shares with all of them (``MAP_SHARED``, made before it forks), and a
worker looks up a key its outbox may not hold there before recording: found, the retry is
answered with the first record's id, time and receipt (signed again: a receipt is the same
for the same record) or refused with 409 for another choice, and nothing is recorded.

Each worker writes only its own region (one writer: a sequence number, odd while a slot is
being written, lets a reader tell a slot it read whole; a checksum backs that up), a set of
four slots per key hash, the oldest of a set replaced. So it is a window, not a day: a key is
found while its worker has recorded fewer than about 8,000 keyed records since (98 %; 86 % at
16,000), while the snippet retries after 2, 6, 18 … seconds, and at the visitor's next page.
What it leaves open: a retry older than the window on another worker is recorded again,
unless it says it is a retry (``attempt``): then the central store answers for it, as for a
retry sent to another node (store_retries.py).

Two copies of one request in flight at once on two workers: each worker claims the key in its
region before it records, then looks at the others'; the later claim (by time, then worker)
waits, a few milliseconds at a time and three seconds at most (a claim left by a worker
that died), for the earlier one's record and answers with it. Only claims made within the same
microseconds, each unseen by the other, can still both record.

A slot holds no personal data in the clear: the key's (site, subject, key) as the digest the
outbox keeps it by (idempotency.key_digest), the content fingerprint, the record id and time,
the record's content hash, when it was made.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
import uuid
from typing import NamedTuple

from gateway.recording.outbox import idempotency

# seq, key digest, fingerprint, record id, recorded_at (Unix µs), content hash, made (Unix
# ns), checksum of the fields between seq and it.
_SLOT = struct.Struct("<Q16s16s16sq32sq8s")
_FIELDS = struct.Struct("<16s16s16sq32sq")  # the slot without its seq and checksum
_STRIDE = 128
_SEQ = struct.Struct("<Q")
_BODY = slice(8, _SLOT.size - 8)  # what the checksum covers
_MADE = struct.Struct("<q")
_MADE_AT = 8 + _FIELDS.size - 8
WAYS = 4
SLOTS = 32_768  # per worker at most: 4 MiB, in pages touched only as keys arrive
# All regions together at most (a worker reading its peers' regions maps their pages too, and
# counts them in its RSS): past 8 workers each region gets a share, never under 4,096 slots.
BUDGET_BYTES = 32 * 1024 * 1024
MIN_SLOTS = 4_096
TTL_NS = idempotency.TTL_NS  # as the outboxes keep theirs


class Earlier(NamedTuple):
    """What a worker published of a keyed record it made (or, ``pending``, is making)."""

    fingerprint: str
    record_id: str
    recorded_us: int
    content_hash: str

    @property
    def pending(self) -> bool:
        """A claim: the worker is recording the key's record now (no id yet)."""
        return self.record_id == NIL


NIL = str(uuid.UUID(int=0))
_ZERO_16, _ZERO_32 = bytes(16), bytes(32)


class Found(NamedTuple):
    """An entry of another worker's region, with when it was made and by which worker."""

    made_ns: int
    region: int
    entry: Earlier


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=8).digest()


class RecentKeys:
    """``count`` regions of ``slots`` slots in shared memory; worker ``k`` writes region k."""

    def __init__(self, count: int, slots: int | None = None) -> None:
        if slots is None:
            share = BUDGET_BYTES // _STRIDE // max(count, 1)
            slots = max(MIN_SLOTS, min(SLOTS, share - share % WAYS))
        if count < 1 or slots < WAYS or slots % WAYS:
            raise ValueError("count must be at least 1, slots a positive multiple of 4")
        self.count = count
        self.slots = slots
        self._sets = slots // WAYS
        self._memory = mmap.mmap(-1, count * slots * _STRIDE)

    def _set_start(self, region: int, key_digest: bytes) -> int:
        """The offset of the first slot of the key's set in region ``region`` (1-based)."""
        index = int.from_bytes(key_digest[:8], "little") % self._sets
        return ((region - 1) * self.slots + index * WAYS) * _STRIDE

    def publish(self, region: int, key_digest: bytes, entry: Earlier, made_ns: int) -> None:
        """Make ``entry`` findable by the other workers (called by region's own worker)."""
        self._store(region, key_digest, _FIELDS.pack(
            key_digest, bytes.fromhex(entry.fingerprint), uuid.UUID(entry.record_id).bytes,
            entry.recorded_us, bytes.fromhex(entry.content_hash), made_ns,
        ))  # fmt: skip

    def _store(self, region: int, key_digest: bytes, body: bytes) -> None:
        """Write ``body`` to the key's slot in region: the slot of the same key, else the
        oldest of its set (an empty one is the oldest); one writer, so a seqlock suffices."""
        memory = self._memory
        start = self._set_start(region, key_digest)
        at, oldest = start, None
        for way in range(start, start + WAYS * _STRIDE, _STRIDE):
            if memory[way + 8 : way + 24] == key_digest:
                at = way
                break
            (made,) = _MADE.unpack_from(memory, way + _MADE_AT)
            if oldest is None or made < oldest:
                at, oldest = way, made
        (seq,) = _SEQ.unpack_from(memory, at)
        seq += seq & 1  # a slot left odd by a worker killed mid-write starts over
        _SEQ.pack_into(memory, at, seq + 1)  # odd: being written
        memory[at + _BODY.start : at + _BODY.stop] = body
        memory[at + _BODY.stop : at + _SLOT.size] = _checksum(body)
        _SEQ.pack_into(memory, at, seq + 2)

    def claim(self, region: int, key_digest: bytes, fingerprint: str, made_ns: int) -> None:
        """Say that region's worker is recording the key now (``publish`` ends the claim
        with the record, ``retract`` without one)."""
        body = _FIELDS.pack(key_digest, bytes.fromhex(fingerprint), _ZERO_16, 0, _ZERO_32, made_ns)
        self._store(region, key_digest, body)

    def retract(self, region: int, key_digest: bytes, claimed_ns: int) -> None:
        """Drop region's claim made at ``claimed_ns`` on the key (its record was not made),
        unless the slot holds something newer (a record, or a later request's claim): made
        at time 0, it is older than any lookup asks for, and its slot the first reused."""
        held = self.entry(region, key_digest, 0)
        if held is not None and held.entry.pending and held.made_ns == claimed_ns:
            self._store(region, key_digest, _FIELDS.pack(key_digest, _ZERO_16, _ZERO_16, 0,
                                                         _ZERO_32, 0))  # fmt: skip

    def others(self, region: int, key_digest: bytes, since_ns: int) -> list[Found]:
        """What the other workers published for the key since ``since_ns``, records and
        claims (the asking worker's own region is skipped: its outbox holds its keys)."""
        found = (self.entry(other, key_digest, since_ns) for other in range(1, self.count + 1)
                 if other != region)  # fmt: skip
        return [f for f in found if f is not None]

    def entry(self, region: int, key_digest: bytes, since_ns: int) -> Found | None:
        """What region's worker published for the key since ``since_ns``, if anything."""
        memory = self._memory
        start = self._set_start(region, key_digest)
        for at in range(start, start + WAYS * _STRIDE, _STRIDE):
            if memory[at + 8 : at + 24] == key_digest:
                read = self._read(at, key_digest, since_ns)
                return None if read is None else Found(read[0], region, read[1])
        return None

    def _read(self, at: int, key_digest: bytes, since_ns: int) -> tuple[int, Earlier] | None:
        memory = self._memory
        (before,) = _SEQ.unpack_from(memory, at)
        raw = memory[at : at + _SLOT.size]
        (after,) = _SEQ.unpack_from(memory, at)
        if before & 1 or before != after or _checksum(raw[_BODY]) != raw[_BODY.stop :]:
            return None  # being written, or torn: a miss (the retry is recorded)
        _, found, fingerprint, record_id, recorded_us, content, made, _ = _SLOT.unpack(raw)
        if found != key_digest or made < since_ns or not made:  # made 0: a dropped claim
            return None
        return made, Earlier(fingerprint.hex(), str(uuid.UUID(bytes=record_id)), recorded_us,
                             content.hex())  # fmt: skip
