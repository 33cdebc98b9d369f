"""Token buckets per key, in a bounded table: the arithmetic of rate limits, no I/O, no clock.

Each key's bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a
request takes one. The table keeps at most ``max_keys`` buckets in least-recently-used order:
when it is full the least recently used bucket goes, which is harmless when it has refilled
(a full bucket is what a new key gets) and otherwise lets that one key start afresh.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable


class TokenBuckets:
    """``take(key, now)``: 0.0 when the request may pass, else the seconds until it may."""

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be positive, burst and max_keys at least 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        # key -> (tokens left, time of the last take), least recently used first. An
        # OrderedDict, not a dict: popping a plain dict's first key scans the holes that
        # earlier pops left (measured: 40 µs a take once the table was full).
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def take(self, key: Hashable, now: float) -> float:
        buckets = self._buckets
        entry = buckets.get(key)
        if entry is None:
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
            buckets[key] = (self.burst - 1.0, now)
            return 0.0
        buckets.move_to_end(key)
        tokens = entry[0] + (now - entry[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst  # no min(): a builtin call costs more than the comparison
        if tokens >= 1.0:
            buckets[key] = (tokens - 1.0, now)
            return 0.0
        buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(wait: float) -> int:
    """Whole seconds for a Retry-After header: rounded up, at least 1."""
    return max(1, math.ceil(wait))
