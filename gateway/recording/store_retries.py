"""A retry another node took first: found in the central store and answered, not recorded twice.

A node answers the retries whose keys it holds: its outbox's, and those its workers share
(recent_keys.py). Behind a load balancer a client whose answer was lost may send its retry to
another node, which holds nothing of the key, and the choice was recorded twice. So a body
that says it is a retry (``attempt`` above 1: the snippet and the mini-program SDK count their
sends of a body) is first looked for in the central store: the subject's record of that kind
with that key from the last day. Found, the retry is answered with it as the first node
answered (its id and time, its receipt signed again with the shared receipt key), or refused
with 409 for another choice; nothing is recorded. A first send never waits for the store.

What it leaves open: a retry that arrives before the first node's forwarder has delivered the
record (within a batch's linger normally, while the snippet retries after 2 s at the earliest)
or while the store cannot be reached is recorded again, as it was before.

Bounded (threat: a client marking every POST as a retry to load the central store with
reads): at most ``IN_FLIGHT`` lookups per worker at once and ``TIMEOUT_S`` each; past either,
the retry is recorded. Such POSTs count against the write limits like any other. A lookup
that failed keeps the store from being asked for ``COOLDOWN_S``, so while it is down a retry
is recorded at once instead of waiting out a timeout each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

from gateway.core.model import ConsentRecord
from gateway.core.preference_record import PreferenceRecord
from gateway.core.record_codec import CONSENT_KIND, PREFERENCE_KIND, Record, record_from_object
from gateway.recording.fields import rfc3339_utc
from gateway.sinks.base import Store

log = logging.getLogger("gateway.recording")

IN_FLIGHT = 8
TIMEOUT_S = 1.0
COOLDOWN_S = 5.0


class StoreRetries:
    """Looks up retries in the store ``store()`` gives (None: no readable store yet)."""

    def __init__(
        self,
        store: Callable[[], Store | None],
        registry: CollectorRegistry,
        cooldown: float = COOLDOWN_S,
    ) -> None:
        self._store = store
        self._in_flight = 0
        self._cooldown = cooldown
        self._down_until = 0.0  # monotonic time before which the store is not asked
        self.m_lookups = Counter(
            "consent_retry_store_lookups_total",
            "Retries (attempt above 1) looked for in the central store, by outcome: found "
            "(answered from the store's record), missing (recorded), busy (too many lookups "
            "at once: recorded), failed (the store did not answer in time: recorded), "
            "unreachable (not asked, a lookup failed moments ago: recorded).",
            ["outcome"], registry=registry,
        )  # fmt: skip

    async def earlier(self, record: Record, since_ns: int) -> Record | None:
        """The store's record of ``record``'s subject made with its key since ``since_ns``,
        or None (none there, or not asked: see the module's bounds)."""
        key = record.idempotency_key
        store = self._store()
        if key is None or store is None:
            return None
        if isinstance(record, ConsentRecord):
            kind = CONSENT_KIND
        elif isinstance(record, PreferenceRecord):
            kind = PREFERENCE_KIND
        else:
            return None
        if time.monotonic() < self._down_until:
            self.m_lookups.labels("unreachable").inc()
            return None
        if self._in_flight >= IN_FLIGHT:
            self.m_lookups.labels("busy").inc()
            return None
        self._in_flight += 1
        try:
            found = await asyncio.wait_for(
                store.keyed_record(kind, record.site, record.subject_id, key,
                                   rfc3339_utc(since_ns)),
                TIMEOUT_S,
            )  # fmt: skip
            earlier = None if found is None else record_from_object(found)
        except Exception as exc:  # the store is down or slow: the retry is recorded
            if time.monotonic() >= self._down_until:  # once per outage, not per retry
                log.warning("looking up a retry in the store failed: %r", exc)
            self._down_until = time.monotonic() + self._cooldown
            self.m_lookups.labels("failed").inc()
            return None
        finally:
            self._in_flight -= 1
        self.m_lookups.labels("missing" if earlier is None else "found").inc()
        return earlier
