"""Export row encoders (pure): a batch of records in, CSV or JSON Lines text out.

Each batch is encoded on its own, so an export of any size holds one batch at a time.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

# The exported columns, in order; choices and signals as JSON text in CSV.
COLUMNS: tuple[str, ...] = (
    "record_id", "recorded_at", "site", "subject_id", "banner_version", "consent_revision",
    "action", "choices", "channel", "language", "rule_id", "region_country",
    "region_subdivision", "region_source", "gpc", "ip_truncated", "user_agent", "origin",
    "page_url", "node_id", "idempotency_key", "withdraws", "signals",
)  # fmt: skip
FORMATS = ("csv", "jsonl")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    text = str(value)
    # CSV injection: a spreadsheet would run a cell starting with these as a formula, and
    # user_agent, origin and page_url come from visitors.
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def csv_header() -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(COLUMNS)
    return out.getvalue()


def csv_rows(records: Sequence[Mapping[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for r in records:
        writer.writerow([_cell(r[c]) for c in columns])
    return out.getvalue()


def csv_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A whole small table (reports) as CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()


def jsonl_rows(records: Sequence[Mapping[str, Any]], kind: str = "record") -> bytes:
    return b"".join(
        orjson.dumps({"type": kind, **r}, option=orjson.OPT_SORT_KEYS) + b"\n" for r in records
    )
