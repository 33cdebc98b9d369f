"""Region code → rule as of today: the shipped map, plus regions whose law has started.

A template may list ``regions_from = { "US-OK" = 2027-01-01 }``: until that day (UTC) the code
is unmapped, so it resolves like any unlisted code (US-OK → the ``us`` union rule); from that
day it maps to the template. The switch happens on the day, in a running process, without a
release: every lookup compares the clock with the next switch time (one float comparison), and
``epoch`` tells memoising callers that the map changed. The clock is injectable for tests.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence

from gateway.core.model import Rule

Clock = Callable[[], float]  # seconds since the Unix epoch, like time.time
_NEVER = float("inf")


def _midnight_utc(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


class RegionMap:
    """The hot-path tables: country → rule and country → {subdivision suffix → rule}."""

    __slots__ = (
        "_clock",
        "_dated",
        "_fixed",
        "_next",
        "_rules",
        "by_country",
        "by_subdivision",
        "epoch",
    )

    def __init__(
        self,
        rules: Mapping[str, Rule],
        fixed: Mapping[str, str],
        dated: Sequence[tuple[dt.date, str, str]] = (),
        clock: Clock = time.time,
    ) -> None:
        self._rules = rules
        self._fixed = dict(fixed)
        self._dated = sorted(dated)
        self._clock = clock
        self.epoch = 0
        self.by_country: dict[str, Rule] = {}
        self.by_subdivision: dict[str, dict[str, Rule]] = {}
        self._next = _NEVER
        self._build(clock())

    def codes(self, now: float | None = None) -> dict[str, str]:
        """Region code → rule id in force at ``now`` (default: the clock's time)."""
        at = self._clock() if now is None else now
        codes = dict(self._fixed)
        for day, code, rule_id in self._dated:
            if _midnight_utc(day) <= at:
                codes[code] = rule_id
        return codes

    def _build(self, now: float) -> None:
        codes = self.codes(now)
        by_country = {c: self._rules[r] for c, r in codes.items() if "-" not in c}
        by_subdivision: dict[str, dict[str, Rule]] = {}
        for code, rule_id in codes.items():
            if "-" in code:
                country, sub = code.split("-", 1)
                by_subdivision.setdefault(country, {})[sub] = self._rules[rule_id]
        self.by_country, self.by_subdivision = by_country, by_subdivision
        later = [_midnight_utc(day) for day, _, _ in self._dated if _midnight_utc(day) > now]
        self._next = min(later, default=_NEVER)
        self.epoch += 1

    def refresh(self) -> None:
        """Rebuild the tables once the next dated region has started (cheap when none has)."""
        now = self._clock()
        if now >= self._next:
            self._build(now)

    def now(self) -> float:
        """The injected clock's time."""
        return self._clock()

    def next_switch(self) -> float:
        """When the next dated region joins its rule (Unix time), or infinity."""
        return self._next

    def upcoming(self) -> list[tuple[dt.date, str, str]]:
        """The dated regions not yet in force: (first day, code, rule id)."""
        now = self._clock()
        return [entry for entry in self._dated if _midnight_utc(entry[0]) > now]
