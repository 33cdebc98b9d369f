"""Rights-request metrics per calendar year in the form of CCPA regulations §7102(a) (pure).

For each request type: requests received in the year, complied with in whole or in part,
denied, and the median and mean number of days to respond (received → completed or denied;
requests still open are counted as received only).

Input: one row per request received in the year, ``(type, state, received_at, closed_at)``,
times as RFC 3339 text, ``closed_at`` the first move to a final state (or None). The rights
package (gateway/rights/, tables ``rights_requests`` and ``rights_transitions``) provides
them; gateway/sinks/audit_postgres.py holds the query.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from datetime import datetime
from typing import Any

COMPLIED = "completed"
DENIED = "denied"


def _days(start: str, end: str) -> float:
    delta = datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(
        start.replace("Z", "+00:00")
    )
    return delta.total_seconds() / 86400


def ccpa_table(
    rows: Iterable[tuple[str, str, str, str | None]],
) -> tuple[list[str], list[list[Any]]]:
    per: dict[str, dict[str, Any]] = {}
    for kind, state, received, closed in rows:
        m = per.setdefault(kind, {"received": 0, "complied": 0, "denied": 0, "days": []})
        m["received"] += 1
        if state == COMPLIED:
            m["complied"] += 1
        elif state == DENIED:
            m["denied"] += 1
        if closed is not None and state in (COMPLIED, DENIED):
            m["days"].append(_days(received, closed))
    header = ["type", "received", "complied_in_whole_or_part", "denied", "median_days",
              "mean_days", "open"]  # fmt: skip
    lines = []
    for kind in sorted(per):
        m = per[kind]
        days = m["days"]
        lines.append([
            kind, m["received"], m["complied"], m["denied"],
            round(statistics.median(days), 1) if days else None,
            round(statistics.fmean(days), 1) if days else None,
            m["received"] - m["complied"] - m["denied"],
        ])  # fmt: skip
    return header, lines
