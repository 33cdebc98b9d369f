"""Banner impressions counted in memory where the banner is served, without personal data.

One dict increment per banner answer (consent.js, config, banner page), keyed by site, banner
version, rule, region, language and channel only: values the gateway validated or chose
itself, never raw request text. The keys an outsider can make are bounded by the catalog
(sites x versions x rules x regions x the site's locales); ``MAX_KEYS`` bounds them anyway,
past which views are counted as ``dropped``. The app flushes the counts to the central store
every ``FLUSH_SECONDS`` (gateway/audit/service.py).

What is counted: served answers, 200 and 304 alike. A browser that reuses its cached
consent.js without asking (max-age) is not counted, so impressions are a lower bound of
page views; the opt-in rate therefore divides by ``max(impressions, decisions)`` of a group
(every decision record proves a banner was seen) — see README "Reports".
"""

from __future__ import annotations

ImpressionKey = tuple[str, str, str, str, str, str]  # site, version, rule, region, lang, channel
MAX_KEYS = 20_000
FLUSH_SECONDS = 60.0


class Impressions:
    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self.counts: dict[ImpressionKey, int] = {}
        self.dropped = 0

    def count(self, key: ImpressionKey) -> None:
        counts = self.counts
        if key in counts:
            counts[key] += 1
        elif len(counts) < self.max_keys:
            counts[key] = 1
        else:
            self.dropped += 1

    def take(self) -> dict[ImpressionKey, int]:
        """The counts so far, and start afresh (the caller flushes them)."""
        taken, self.counts = self.counts, {}
        return taken

    def give_back(self, counts: dict[ImpressionKey, int]) -> None:
        """Counts a failed flush could not store: kept for the next one."""
        for key, n in counts.items():
            if key in self.counts or len(self.counts) < self.max_keys:
                self.counts[key] = self.counts.get(key, 0) + n
            else:
                self.dropped += n
