"""Response periods: "<n> days", "<n> business days", "<n> months". Pure: no I/O.

Calendar months follow the civil rule (and GDPR's, per Regulation 1182/71 Art. 3(2)(c)): the
period ends on the same day of the month; when that day does not exist in the target month
(one month from 31 January), on the month's last day.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

_PERIOD = re.compile(r"^\s*(\d{1,4})\s+(days?|business days?|months?)\s*$")
UNITS = ("days", "business_days", "months")


@dataclass(frozen=True)
class Period:
    amount: int
    unit: str  # one of UNITS

    def __str__(self) -> str:
        unit = self.unit.replace("_", " ")
        return f"{self.amount} {unit[:-1] if self.amount == 1 else unit}"

    @property
    def is_zero(self) -> bool:
        return self.amount == 0


def parse_period(text: str) -> Period:
    """``Period`` of "45 days", "15 business days", "1 months"; ValueError otherwise."""
    match = _PERIOD.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(
            f"{text!r} is not a period such as '30 days', '1 months', '15 business days'"
        )
    unit = match.group(2).rstrip("s").replace(" ", "_")
    return Period(
        int(match.group(1)), {"day": "days", "business_day": "business_days"}.get(unit, "months")
    )


def add_months(start: dt.datetime, months: int) -> dt.datetime:
    """``start`` plus calendar months, clamped to the target month's last day."""
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


def add_business_days(start: dt.datetime, days: int) -> dt.datetime:
    """``start`` plus ``days`` weekdays (Monday-Friday); the time of day is kept."""
    current = start
    left = days
    while left > 0:
        current += dt.timedelta(days=1)
        if current.weekday() < 5:
            left -= 1
    return current


def add(start: dt.datetime, period: Period) -> dt.datetime:
    if period.unit == "months":
        return add_months(start, period.amount)
    if period.unit == "business_days":
        return add_business_days(start, period.amount)
    return start + dt.timedelta(days=period.amount)
