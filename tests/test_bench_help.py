"""Every benchmark answers ``--help`` (the README sends operators to them).

Threat: a harness that reads ``sys.argv`` by hand crashed on ``--help`` (``int('--help')``)
and would have run a benchmark on a wrong argument; each now parses its arguments.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNABLE = sorted(
    p.stem for p in (ROOT / "bench").glob("*.py") if '__name__ == "__main__"' in p.read_text()
)


@pytest.mark.parametrize("name", RUNNABLE)
def test_every_benchmark_answers_help(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:"), done.stdout[:500]
