"""`consent-gateway audit verify|checkpoint` and `consent-gateway export`."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import IO

import orjson

from gateway.audit import params, service
from gateway.core.settings import Settings


async def verify(settings: Settings, site: str | None, since: str | None) -> int:
    report = await service.verify(settings, site, params.when(since, "since"))
    out = report.as_json()
    for key, value in out.items():
        if key not in ("first_break", "kinds"):
            print(f"{key}: {value}")
    for name, kind in sorted(report.kinds.items()):
        state = "ok" if kind.first_break is None else f"{kind.problems} problem(s)"
        print(f"  {name}: {kind.checked} link(s) checked, {state}")
    if report.first_break is not None:
        b = report.first_break
        print(f"BROKEN: {b.problem} at node {b.node_id!r} link {b.seq} record {b.ref} "
              f"[{b.kind or 'chain'}]: {b.detail}")  # fmt: skip
        for more in report.problems[1:10]:
            print(f"  also: {more.problem} at node {more.node_id!r} link {more.seq} "
                  f"({more.ref}) [{more.kind or 'chain'}]")  # fmt: skip
        return 2
    return 0


async def checkpoint(settings: Settings) -> int:
    taken = await service.checkpoint(settings)
    print(f"checkpoint {taken['checkpoint_id']}: {len(taken['heads'])} node(s) signed")
    return 0


async def export(
    settings: Settings,
    site: str,
    start: str | None,
    end: str | None,
    fmt: str,
    filters: dict[str, str],
    output: Path | None,
) -> int:
    """Write the export to ``output`` (stdout when absent); with CSV the banner versions'
    texts go beside it as ``<output>.versions.json``."""
    chosen = params.fmt(fmt)
    checked = params.filters(filters)
    stream: IO[bytes] = output.open("wb") if output else sys.stdout.buffer
    versions: set[str] = set()
    count = 0
    try:
        async for chunk in service.export(
            settings, site, params.when(start, "from"), params.when(end, "to"), checked, chosen
        ):
            stream.write(chunk)
            count += chunk.count(b"\n")
        if chosen == "csv" and output is not None:
            versions = await _versions_in(output)
            texts = await service.export_versions(settings, site, sorted(versions))
            side = output.with_name(output.name + ".versions.json")
            side.write_bytes(orjson.dumps(texts, option=orjson.OPT_INDENT_2))
    finally:
        if output:
            stream.close()
    print(f"exported {count} line(s)", file=sys.stderr)
    return 0


async def _versions_in(path: Path) -> set[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return {row["banner_version"] for row in csv.DictReader(f)}
