"""The pure report arithmetic: rights metrics in CCPA §7102 form, the z-test, the tables."""

from __future__ import annotations

import math

import pytest

from gateway.audit import rollup, rows
from gateway.audit.rights_metrics import ccpa_table
from gateway.audit.trend import two_proportion


def test_ccpa_figures_per_type() -> None:
    header, lines = ccpa_table([
        ("access", "completed", "2026-01-01T00:00:00Z", "2026-01-11T00:00:00Z"),
        ("access", "completed", "2026-02-01T00:00:00Z", "2026-02-21T00:00:00Z"),
        ("access", "denied", "2026-03-01T00:00:00Z", "2026-03-31T00:00:00Z"),
        ("access", "in_progress", "2026-04-01T00:00:00Z", None),
        ("deletion", "completed", "2026-01-01T00:00:00Z", "2026-01-02T12:00:00Z"),
    ])  # fmt: skip
    table = {line[0]: dict(zip(header, line, strict=True)) for line in lines}
    assert table["access"] == {
        "type": "access", "received": 4, "complied_in_whole_or_part": 2, "denied": 1,
        "median_days": 20.0, "mean_days": 20.0, "open": 1,
    }  # fmt: skip
    assert table["deletion"]["median_days"] == 1.5


def test_z_test_against_the_formula() -> None:
    change = two_proportion(400, 1000, 460, 1000)
    assert change is not None
    pooled = 860 / 2000
    z = (0.46 - 0.40) / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert change.z == pytest.approx(z)
    assert change.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    assert change.significant is True  # z ≈ 2.71, p ≈ 0.0067 < 0.01
    small = two_proportion(4, 10, 6, 10)
    assert small is not None and small.significant is False
    assert two_proportion(0, 0, 1, 1) is None


def test_consent_table_rates() -> None:
    header, lines = rollup.consent_table(
        ["day"],
        [{"day": "d1", "action": "accept_all", "n": 3}, {"day": "d1", "action": "gpc", "n": 1}],
    )
    line = dict(zip(header, lines[0], strict=True))
    assert line["total"] == 4 and line["accept_all_rate"] == 0.75 and line["gpc_rate"] == 0.25


@pytest.mark.parametrize("bad", ["day;drop", "region,region", "x" * 40])
def test_group_refuses_unknown_dimensions(bad: str) -> None:
    with pytest.raises(ValueError, match="dimension"):
        rollup.parse_group(bad)


def test_csv_cells() -> None:
    text = rows.csv_rows([{"a": "=1+1", "b": None, "c": True, "d": {"y": 1, "x": 2}}],
                         ["a", "b", "c", "d"])  # fmt: skip
    assert text == '\'=1+1,,true,"{""x"":2,""y"":1}"\r\n'
