"""Appends through the outbox, with each idempotency key answered once across the workers.

A worker's outbox answers a retry whose key it holds (outbox/idempotency.py). Under workers,
a key another worker recorded (or is recording) answers from that record instead
(recent_keys.py), and a key this worker records is claimed, then published for the others.
A body that says it is a retry is first looked for in the central store, where another node's
record of it is (store_retries.py). ``consent_idempotent_replays_total{source}`` counts the
retries answered each way.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter

from gateway.core.errors import Unavailable
from gateway.core.record_codec import Record
from gateway.recording import recent_keys
from gateway.recording.fields import rfc3339_utc
from gateway.recording.outbox import idempotency
from gateway.recording.outbox.group_commit import Outbox
from gateway.recording.outbox.items import Appended
from gateway.recording.outboxes import WorkerRole
from gateway.recording.receipts import Receipts, content_hash
from gateway.recording.store_retries import StoreRetries

# How long a keyed write waits for another worker that is recording the same key (a claim
# older than this is a worker's that died), and how often it looks.
CLAIM_WAIT_S = 3.0
CLAIM_POLL_S = 0.002


class KeyedAppends:
    """The appends of one worker (``role``; None: a single process) to its ``outbox``."""

    def __init__(
        self,
        outbox: Outbox,
        registry: CollectorRegistry,
        role: WorkerRole | None,
        stored: StoreRetries | None = None,
    ) -> None:
        self.outbox = outbox
        self.role = role
        self.stored = stored  # None: retries are not looked for in a store
        self.m_replays = Counter(
            "consent_idempotent_replays_total",
            "Keyed writes answered from the record their key made before (nothing recorded), "
            "by where the key was found: this worker's outbox, another worker's, or the "
            "central store (another node's record).",
            ["source"], registry=registry,
        )  # fmt: skip

    async def append(
        self,
        record: Record,
        receipt: str,
        body: bytes,
        now_ns: int,
        receipts: Receipts | None,
        retry: bool = False,
        content: bytes | None = None,
    ) -> Appended:
        """Durably append a signed record (``body``: its canonical JSON, ``content`` the hash
        of it that the receipt signs, when made already; ``receipts``: the signer of its
        receipt, which signs a retry's answer again; ``retry``: the client says it sent this
        body before)."""
        if retry and self.stored is not None and record.idempotency_key is not None:
            stored = await self.stored.earlier(record, now_ns - idempotency.TTL_NS)
            if stored is not None:
                return self._from_store(record, stored, receipts)
        # The key's digest, fingerprint and content hash, made once: the shared regions and
        # the outbox both keep the key by them.
        scope = idempotency.scope(record, body, content)
        role = self.role
        shared = role.keys if role is not None and scope is not None else None
        if shared is None or role is None or scope is None:
            return await self._append_here(record, receipt, body, receipts, scope)
        key_digest, fingerprint, content_hash = scope
        since = now_ns - recent_keys.TTL_NS
        own = shared.entry(role.index, key_digest, since)
        if own is not None and not own.entry.pending:
            # This worker made the key's record: its outbox answers (and keeps what it shared).
            return await self._append_here(record, receipt, body, receipts, scope)
        # Claim the key, then look at the other workers': a record there answers; of two
        # claims, the later one waits for the other's record.
        mine = (time.time_ns(), role.index)
        shared.claim(role.index, key_digest, fingerprint, mine[0])
        earlier = await self._elsewhere(shared, role.index, key_digest, since, mine)
        if earlier is not None:
            shared.retract(role.index, key_digest, mine[0])
            return self._replay(record, earlier, fingerprint, receipts)
        try:
            appended = await self._append_here(record, receipt, body, receipts, scope)
        except BaseException:
            shared.retract(role.index, key_digest, mine[0])
            raise
        if appended.duplicate:
            shared.retract(role.index, key_digest, mine[0])
        else:
            made = recent_keys.Earlier(
                fingerprint, appended.record_id, now_ns // 1000, content_hash.hex()
            )
            shared.publish(role.index, key_digest, made, time.time_ns())
        return appended

    async def _append_here(
        self,
        record: Record,
        receipt: str,
        body: bytes,
        receipts: Receipts | None,
        scope: idempotency.Scope | None = None,
    ) -> Appended:
        """Append to this worker's outbox, which answers a key it holds from its record
        (with the record's content hash: its receipt is signed again here)."""
        appended = await self.outbox.append(record, receipt, body, scope)
        if not appended.duplicate:
            return appended
        self.m_replays.labels("this_worker").inc()
        if appended.receipt:
            return appended  # a key kept with its receipt (carried over from the old table)
        return self._signed(record, appended.record_id, appended.recorded_at,
                            appended.content_hash, receipts)  # fmt: skip

    @staticmethod
    async def _elsewhere(
        shared: recent_keys.RecentKeys,
        region: int,
        key_digest: bytes,
        since: int,
        mine: tuple[int, int],
    ) -> recent_keys.Earlier | None:
        """The record another worker made for the key; while another worker's claim on it
        made before ``mine`` is pending, waits for its record, a few milliseconds at a time
        and ``CLAIM_WAIT_S`` at most."""
        deadline = time.monotonic() + CLAIM_WAIT_S
        while True:
            found = shared.others(region, key_digest, since)
            made = [f.entry for f in found if not f.entry.pending]
            if made:
                return made[0]
            fresh = time.time_ns() - int(CLAIM_WAIT_S * 1e9)
            ahead = [
                f for f in found
                if f.entry.pending and f.made_ns >= fresh and (f.made_ns, f.region) < mine
            ]  # fmt: skip
            if not ahead or time.monotonic() >= deadline:
                return None
            await asyncio.sleep(CLAIM_POLL_S)

    def _replay(
        self,
        record: Record,
        earlier: recent_keys.Earlier,
        fingerprint: str,
        receipts: Receipts | None,
    ) -> Appended:
        """The answer to a retry of a record another worker made (409 for another choice)."""
        if earlier.fingerprint != fingerprint:
            raise idempotency.KeyReused()
        self.m_replays.labels("other_worker").inc()
        recorded_at = rfc3339_utc(earlier.recorded_us * 1000)
        return self._signed(record, earlier.record_id, recorded_at, earlier.content_hash,
                            receipts)  # fmt: skip

    def _from_store(self, record: Record, earlier: Record, receipts: Receipts | None
                    ) -> Appended:  # fmt: skip
        """The answer to a retry whose record the store holds (409 for another choice)."""
        if idempotency.fingerprint(earlier) != idempotency.fingerprint(record):
            raise idempotency.KeyReused()
        self.m_replays.labels("store").inc()
        return self._signed(record, earlier.record_id, earlier.recorded_at,
                            content_hash(earlier), receipts)  # fmt: skip

    @staticmethod
    def _signed(
        record: Record,
        record_id: str,
        recorded_at: str,
        content_hash: str,
        receipts: Receipts | None,
    ) -> Appended:
        """A retry's answer: the earlier record, with its receipt signed again (the same
        token for the same record, or one signed with a newer key)."""
        if receipts is None:  # the service checked it before signing; never None here
            raise Unavailable("the shared receipt key cannot be read yet", retry_after=5)
        token = receipts.token(record.site, record.subject_id, record_id, recorded_at,
                               content_hash)  # fmt: skip
        return Appended(record_id, recorded_at, token, True)
