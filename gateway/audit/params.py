"""Parameters of the audit calls, validated (pure): times, filters, formats."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time

from gateway.audit import rollup, rows
from gateway.core.errors import BadRequest

_FILTER_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
FILTERS = ("region", "rule", "channel", "action")


def when(value: str | None, name: str) -> datetime | None:
    """``2026-01-31`` (midnight UTC) or an RFC 3339 time; None when absent."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), UTC)
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            "invalid_parameter", f"{name}: expected YYYY-MM-DD or an RFC 3339 time", field=name
        ) from None
    if found.tzinfo is None:
        raise BadRequest("invalid_parameter", f"{name}: give a time zone offset", field=name)
    return found


def day(value: str | None, name: str) -> date | None:
    found = when(value, name)
    return None if found is None else found.astimezone(UTC).date()


def filters(query: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for name in FILTERS:
        value = query.get(name)
        if value is None or value == "":
            continue
        if not _FILTER_VALUE.match(value):
            raise BadRequest(
                "invalid_parameter", f"{name}: letters, digits, _.:- only, 1-64", field=name
            )
        out[name] = value
    return out


def fmt(value: str | None, allowed: tuple[str, ...] = rows.FORMATS) -> str:
    chosen = value or allowed[0]
    if chosen not in allowed:
        raise BadRequest(
            "invalid_parameter", f"format: one of {', '.join(allowed)}", field="format"
        )
    return chosen


def group(value: str | None) -> tuple[str, ...]:
    if value is not None and len(value) > 200:
        raise BadRequest("invalid_parameter", "group: too long", field="group")
    try:
        return rollup.parse_group(value)
    except ValueError as exc:
        raise BadRequest("invalid_parameter", f"group: {exc}", field="group") from None


def year(value: str | None) -> int:
    if value is None or not value.isdigit() or len(value) != 4 or not 2000 <= int(value) <= 2999:
        raise BadRequest("invalid_parameter", "year: a calendar year, e.g. 2026", field="year")
    return int(value)
