"""Report arithmetic over rollup rows (pure).

The opt-in rate of a group is the share of its consent records with action ``accept_all``
(``accept_rate``); a purpose's grant rate is the share of records that granted it. Both count
records (decisions), not impressions: see README "Reports" for the impression-based rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.audit.trend import two_proportion
from gateway.core.model import ACTIONS

DIMENSIONS = ("day", "region", "rule_id", "banner_version", "language", "channel")
MAX_ROWS = 100_000  # a report bigger than this is refused: narrow the range or the grouping


def parse_group(value: str | None) -> tuple[str, ...]:
    """``group=day,region`` → the dimensions, validated; ValueError names the bad one."""
    if not value:
        return ("day",)
    dims = tuple(d.strip() for d in value.split(",") if d.strip())
    for d in dims:
        if d not in DIMENSIONS and d != "purpose":
            raise ValueError(f"unknown dimension {d[:32]!r}; one of {', '.join(DIMENSIONS)}")
    if len(set(dims)) != len(dims):
        raise ValueError("a dimension is named twice")
    return dims


def consent_table(
    dims: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    impressions: Mapping[tuple[Any, ...], int] | None = None,
) -> tuple[list[str], list[list[Any]]]:
    """Rows of (dims…, action, n) → one line per group: counts and rates of each action,
    and with ``impressions`` (per group key) the opt-in rate: accept_all over
    ``max(impressions, decisions)`` (served banners undercount views a browser cache hid,
    and each decision proves a view)."""
    groups: dict[tuple[Any, ...], dict[str, int]] = {}
    for r in rows:
        key = tuple(r[d] for d in dims)
        counts = groups.setdefault(key, dict.fromkeys(ACTIONS, 0))
        counts[r["action"]] = counts.get(r["action"], 0) + int(r["n"])
    header = [*dims, "total", *ACTIONS, *(f"{a}_rate" for a in ACTIONS)]
    if impressions is not None:
        header += ["impressions", "opt_in_rate"]
    lines = []
    for key in sorted(groups, key=lambda k: tuple(str(v) for v in k)):
        counts = groups[key]
        total = sum(counts.values())
        rates = [round(counts[a] / total, 6) if total else 0.0 for a in ACTIONS]
        line = [*key, total, *(counts[a] for a in ACTIONS), *rates]
        if impressions is not None:
            seen = impressions.get(key, 0)
            line += [seen, round(counts["accept_all"] / max(seen, total), 6) if total else 0.0]
        lines.append(line)
    return header, lines


def purpose_table(
    dims: Sequence[str], rows: Iterable[Mapping[str, Any]]
) -> tuple[list[str], list[list[Any]]]:
    """Rows of (dims…, purpose, granted, n) → grant counts and rates per purpose."""
    header = [*dims, "purpose", "records", "granted", "grant_rate"]
    lines = []
    for r in rows:
        n, g = int(r["n"]), int(r["granted"])
        lines.append([*(r[d] for d in dims), r["purpose"], n, g, round(g / n, 6) if n else 0.0])
    return header, lines


def version_changes(rows: Iterable[Mapping[str, Any]], alpha: float = 0.01) -> list[dict[str, Any]]:
    """Rows of (region, banner_version, first_day, accepted, n), by region then first day →
    the accept rate's change at each banner version change, with the z-test behind a flag."""
    out: list[dict[str, Any]] = []
    previous: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        before = previous.get(r["region"])
        previous[r["region"]] = r
        if before is None:
            continue
        change = two_proportion(
            int(before["accepted"]), int(before["n"]), int(r["accepted"]), int(r["n"]), alpha
        )
        if change is None:
            continue
        out.append({
            "region": r["region"],
            "from_version": before["banner_version"],
            "to_version": r["banner_version"],
            "changed_on": str(r["first_day"]),
            "rate": "accept_all",
            **change.as_json(),
        })  # fmt: skip
    return out
