"""Laws that start on a date: the region joins its rule on the day, without a release.

Oklahoma (75A O.S. 300-315) and Louisiana (SB 386, 2026) start on 1 Jan 2027, Alabama (HB 351,
2026) on 1 May 2027, Vermont (S.71, 2026) on 1 Jan 2028. Until then each resolves like any
unlisted state: to ``us``, the fail-closed union of the US rules. The clock is injected.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from gateway.app import build_gateway
from gateway.core.jurisdictions import load_rules
from gateway.core.model import Region
from gateway.core.regionmap import RegionMap
from gateway.serving.switches import RuleSwitches
from tests.helpers import make_settings


class Clock:
    """A settable clock: seconds since the Unix epoch."""

    def __init__(self, day: dt.date, hour: int = 0) -> None:
        self.now = 0.0
        self.set(day, hour)

    def set(self, day: dt.date, hour: int = 0, minute: int = 0) -> None:
        self.now = dt.datetime(
            day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC
        ).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("code", "start", "rule_from"),
    [
        ("US-OK", dt.date(2027, 1, 1), "us-states-gpc-optional"),  # no UOOM mandate (Troutman)
        ("US-LA", dt.date(2027, 1, 1), "us-states-gpc-optional"),  # opt-outs via agent signals
        ("US-AL", dt.date(2027, 5, 1), "us-states-gpc-optional"),  # no UOOM provision found
        ("US-VT", dt.date(2028, 1, 1), "us-states"),  # S.71: opt-out preference signals mandated
    ],
)
def test_a_state_joins_its_rule_on_the_day_its_law_starts(
    code: str, start: dt.date, rule_from: str
) -> None:
    clock = Clock(dt.date(2026, 12, 6))
    table = load_rules(clock=clock)
    country, sub = code.split("-")
    region = Region(country, sub, "header")
    site = table.for_site({"*": {"reject_on_first_layer": True}})  # a site with overrides too
    assert table.rule_for(region).id == "us"
    assert site.rule(region).id.startswith("us+")
    clock.set(start - dt.timedelta(days=1), 23, 59)
    assert table.rule_for(region).id == "us"
    assert site.rule(region).id.startswith("us+")
    clock.set(start)  # 00:00 UTC on the first day
    assert table.rule_for(region).id == rule_from
    assert site.rule(region).id.startswith(f"{rule_from}+")
    assert (start, code, rule_from) in table.dated


def test_the_region_map_rebuilds_only_at_a_switch() -> None:
    clock = Clock(dt.date(2026, 12, 31), 12)
    table = load_rules(clock=clock)
    region_map = table.region_map
    epoch = region_map.epoch
    assert region_map.next_switch() == dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()
    assert [code for _, code, _ in region_map.upcoming()] == ["US-LA", "US-OK", "US-AL", "US-VT"]
    region_map.refresh()
    assert region_map.epoch == epoch  # nothing due: the tables stay
    clock.set(dt.date(2027, 1, 1))
    region_map.refresh()
    assert region_map.epoch == epoch + 1
    assert [code for _, code, _ in region_map.upcoming()] == ["US-AL", "US-VT"]
    clock.set(dt.date(2030, 1, 1))
    region_map.refresh()
    assert region_map.next_switch() == float("inf")
    assert region_map.codes()["US-VT"] == "us-states"


def test_an_empty_schedule_never_switches() -> None:
    rules = load_rules().rules
    region_map = RegionMap(rules, {"US": "us"}, (), clock=lambda: 0.0)
    assert region_map.next_switch() == float("inf")
    assert region_map.by_country == {"US": rules["us"]}


def test_a_running_gateway_serves_the_new_rule_on_the_day(tmp_path: Path) -> None:
    """The serving memo remembers the rule per region; the switch task makes it forget."""
    clock = Clock(dt.date(2026, 12, 31), 23)
    gateway = build_gateway(make_settings(tmp_path), rules=load_rules(clock=clock))
    bundle = gateway.catalog.get("demo")
    assert bundle is not None
    oklahoma = Region("US", "OK", "header")
    switches = RuleSwitches(gateway, gateway.catalog.rules.region_map)

    def rule_id() -> str:
        return gateway.decide(bundle, oklahoma, "en", [])[3].id

    assert rule_id() == "us"
    assert not switches.check()
    clock.set(dt.date(2027, 1, 1))
    assert switches.check()  # the day has come: memos forgotten
    assert rule_id() == "us-states-gpc-optional"


def test_the_switch_task_sleeps_until_the_next_day_and_applies_it(tmp_path: Path) -> None:
    clock = Clock(dt.date(2026, 12, 31), 22)
    gateway = build_gateway(make_settings(tmp_path), rules=load_rules(clock=clock))
    region_map = gateway.catalog.rules.region_map
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds  # time passes while the task sleeps

    cleared: list[int] = []
    gateway.clear = lambda: cleared.append(region_map.epoch)  # type: ignore[method-assign]
    asyncio.run(RuleSwitches(gateway, region_map, sleep).run())
    # Two hours to the first switch (hourly wake-ups), then on to 1 May 2027 and 1 Jan 2028.
    assert slept[:2] == [3600.0, 3600.0]
    assert sum(slept) == pytest.approx(
        dt.datetime(2028, 1, 1, tzinfo=dt.UTC).timestamp()
        - dt.datetime(2026, 12, 31, 22, tzinfo=dt.UTC).timestamp()
    )
    assert len(cleared) == 3  # 1 Jan 2027 (OK, LA), 1 May 2027 (AL), 1 Jan 2028 (VT)
