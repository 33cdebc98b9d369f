"""An export of any size streams in constant memory (threat: an export that buffers takes
the node down with the store's size): the CLI exports 30k and then 300k records in a child
process whose peak RSS must not grow with the count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.sinks.postgres import PostgresStore
from tests.audit_data import fill
from tests.pg import pg_dsn  # noqa: F401

pytestmark = pytest.mark.postgres

_PEAK = """
import resource, runpy, sys
sys.argv = ["consent-gateway", *sys.argv[1:]]
try:
    runpy.run_module("gateway.cli.main", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _export_peak_kb(dsn: str, site: str, out: Path, fmt: str) -> tuple[int, int]:
    env = {**os.environ, "GATEWAY_STORE_URL": dsn}
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, "export", site, "--format", fmt, "--output", str(out)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    peak = int(done.stderr.rsplit("PEAK_KB", 1)[1].split()[0])
    with out.open("rb") as f:
        lines = sum(1 for _ in f)
    return peak, lines


async def test_exports_stream_in_constant_memory(pg_dsn: str, tmp_path: Path) -> None:  # noqa: F811
    await fill(pg_dsn, 30_000, site="small")
    await fill(pg_dsn, 300_000, site="big")
    store = PostgresStore(pg_dsn, pool_size=1)
    await store.open()
    for version in ("v1", "v2"):
        await store.publish_version("big", version, "r1", {"en": {"texts": {}, "purposes": {}}})
    await store.close()
    small_kb, small_lines = _export_peak_kb(pg_dsn, "small", tmp_path / "s.csv", "csv")
    big_kb, big_lines = _export_peak_kb(pg_dsn, "big", tmp_path / "b.jsonl", "jsonl")
    assert small_lines == 30_001  # header + records
    assert big_lines == 300_002  # the two banner versions' texts + records
    # Ten times the records, the same peak within a batch's worth (10k rows ~ 15 MB).
    assert big_kb - small_kb < 20_000, (small_kb, big_kb)
