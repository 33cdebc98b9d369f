"""Re-ask periods in calendar months, as the rules state them (TCF: "at least every 13 months").

A period of N months from a day ends on the same day N months later, or on the last day of
that month when it is shorter (31 January + 1 month = 28 or 29 February).
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day ``months`` calendar months later, clamped to the end of a shorter month."""
    year, index = divmod(day.month - 1 + months, 12)
    year += day.year
    last = calendar.monthrange(year, index + 1)[1]
    return dt.date(year, index + 1, min(day.day, last))


def elapsed(since: dt.date, today: dt.date, months: int) -> bool:
    """Whether a period of ``months`` calendar months that began on ``since`` is over."""
    return today >= add_months(since, months)


@functools.lru_cache(maxsize=64)
def shortest_days(months: int) -> int:
    """The fewest days any period of ``months`` calendar months lasts (13 months: 393 days).

    A day count that must never outlast the period (a cookie lifetime, a client that counts
    days) uses this figure. Four years of start days hold every combination of month lengths
    and leap years (the Gregorian century rule only ever removes a 29 February).
    """
    start = dt.date(2001, 1, 1)
    return min(
        (add_months(day, months) - day).days
        for day in (start + dt.timedelta(days=i) for i in range(4 * 366))
    )
