"""Trend monitoring (pure): is a rate's change between two periods significant?

A two-proportion z-test with the pooled proportion: with x1 of n1 and x2 of n2,
``p = (x1 + x2) / (n1 + n2)``, ``z = (x2/n2 - x1/n1) / sqrt(p (1 - p) (1/n1 + 1/n2))``,
two-sided p-value ``erfc(|z| / sqrt 2)``. Flagged when the p-value is below ``alpha`` and both
samples are big enough for the normal approximation (n·p and n·(1-p) at least 5 each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Change:
    before: tuple[int, int]  # (successes, trials)
    after: tuple[int, int]
    rate_before: float
    rate_after: float
    z: float
    p_value: float
    significant: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "before": {"count": self.before[0], "of": self.before[1], "rate": self.rate_before},
            "after": {"count": self.after[0], "of": self.after[1], "rate": self.rate_after},
            "z": round(self.z, 4),
            "p_value": self.p_value,
            "significant": self.significant,
        }


def two_proportion(x1: int, n1: int, x2: int, n2: int, alpha: float = 0.01) -> Change | None:
    """The test, or None when either sample is empty."""
    if n1 <= 0 or n2 <= 0:
        return None
    r1, r2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var == 0:
        z, p = 0.0, 1.0
    else:
        z = (r2 - r1) / math.sqrt(var)
        p = math.erfc(abs(z) / math.sqrt(2))
    enough = all(n * q >= 5 and n * (1 - q) >= 5 for n, q in ((n1, pooled), (n2, pooled)))
    return Change((x1, n1), (x2, n2), r1, r2, z, p, enough and p < alpha)
