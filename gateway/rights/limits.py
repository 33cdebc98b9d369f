"""Write limits of the rights endpoints: the recording path's GCRA buckets (core/ratelimit.py)
with hourly rates. Pure: the web layer passes the client address it located.

- requests and code checks per client address (an unverified caller: receipt or e-mail);
- requests per subject or identity of a site (whoever makes them);
- code e-mails per e-mail identity and per client address, so that nobody can use the
  gateway to flood an inbox, nor one address to flood many.

Each limit of N per hour lets N through at once, then one every 60/N minutes; past it the
caller gets 429 with Retry-After, before anything is stored or sent. The answer is the same
whether or not the identity is known: a limit counts requests, not customers. The buckets
are the node's (its workers share them, core/ratelimit.SharedTables): with several nodes,
the store's count of recent requests per identity (``RightsService``) stays the
cluster-wide limit on code e-mails.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from gateway.core.ratelimit import (
    RateLimited,
    SharedTables,
    TokenBuckets,
    client_key,
    node_buckets,
    retry_after,
)
from gateway.core.settings import Settings


def _take(buckets: TokenBuckets | None, key: Hashable, now: float, detail: str) -> None:
    if buckets is None:
        return
    wait = buckets.take(key, now)
    if wait:
        raise RateLimited(detail, retry_after(wait))


class RightsLimits:
    """``shared``: the node's tables (workers), else the limits are this process's."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedTables | None = None,
    ) -> None:
        def hourly(per_hour: int, name: str) -> TokenBuckets | None:
            return node_buckets(per_hour, 3600.0, per_hour, settings, shared, name)

        self.by_client = hourly(settings.rights_client_per_hour, "rights_client")
        self.by_subject = hourly(settings.rights_subject_per_hour, "rights_subject")
        self.codes_by_identity = hourly(settings.rights_codes_per_hour, "rights_codes")
        self.codes_by_client = hourly(settings.rights_client_codes_per_hour, "rights_client_codes")
        self.clock = clock

    def client(self, ip: str | None) -> None:
        """One request or code check of an unverified caller from this address."""
        _take(self.by_client, client_key(ip), self.clock(),
              "too many rights requests from this address; try again later")  # fmt: skip

    def subject(self, site: str, key: str) -> None:
        """One request for this subject or identity (hash) of the site."""
        _take(self.by_subject, hash(("subject", site, key)), self.clock(),
              "too many rights requests for this person; try again later")  # fmt: skip

    def code(self, ip: str | None, site: str, identity_hash: str) -> None:
        """One code e-mail to this identity, asked for from this address."""
        now = self.clock()
        _take(self.codes_by_client, client_key(ip), now,
              "too many verification codes asked for from here; try again later")  # fmt: skip
        _take(self.codes_by_identity, hash(("code", site, identity_hash)), now,
              "too many verification codes sent to this address; try again later")  # fmt: skip
