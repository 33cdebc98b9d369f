"""The access/portability download: one ZIP with the data as JSON and as CSV. Pure: no I/O.

``subject.json`` holds everything; the CSV files hold the same rows flat, for spreadsheets:
records.csv (every consent record), consents.csv (the current choice per purpose),
preferences.csv, identities.csv and texts.csv (the exact banner texts of every version the
subject's records name, in the record's language).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

_FIXED_TIME = (2000, 1, 1, 0, 0, 0)  # same bytes for the same data: no build time inside
RECORD_COLUMNS = (
    "record_id", "recorded_at", "subject_id", "banner_version", "consent_revision", "action",
    "choices", "channel", "language", "rule_id", "region_country", "region_subdivision",
    "gpc", "ip_truncated", "user_agent", "origin", "page_url", "withdraws",
)  # fmt: skip


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue().encode("utf-8")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    text = str(value)
    # A cell starting with = + - @ is a formula to a spreadsheet (CSV injection, OWASP):
    # user agents and page URLs come from the visitor.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _flatten(prefix: str, value: Any) -> Iterable[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key in sorted(value):
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), value[key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _flatten(f"{prefix}[{index}]", item)
    else:
        yield prefix, "" if value is None else str(value)


def build_zip(data: Mapping[str, Any]) -> bytes:
    """``data``: {"request", "subjects": [{"subject_id", "records", "current", "preferences",
    "identities"}], "texts": {banner_version: {language: texts}}}."""
    files: dict[str, bytes] = {
        "subject.json": orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    }
    subjects = data.get("subjects", [])
    files["records.csv"] = _csv(
        RECORD_COLUMNS,
        ([r.get(c) for c in RECORD_COLUMNS] for s in subjects for r in s.get("records", [])),
    )
    files["consents.csv"] = _csv(
        ("subject_id", "purpose", "granted", "record_id", "recorded_at"),
        (
            (s["subject_id"], p, g, s["current"]["record_id"], s["current"]["recorded_at"])
            for s in subjects
            if s.get("current")
            for p, g in sorted(s["current"]["choices"].items())
        ),
    )
    files["preferences.csv"] = _csv(
        ("subject_id", "product_line", "setting", "value"),
        (
            (s["subject_id"], line, key, value)
            for s in subjects
            for line, prefs in sorted(s.get("preferences", {}).items())
            for key, value in _flatten("", prefs)
        ),
    )
    files["identities.csv"] = _csv(
        ("subject_id", "identity_type"),
        ((s["subject_id"], t) for s in subjects for t in s.get("identities", [])),
    )
    files["texts.csv"] = _csv(
        ("banner_version", "language", "text", "value"),
        (
            (version, language, key, value)
            for version, by_language in sorted(data.get("texts", {}).items())
            for language, texts in sorted(by_language.items())
            for key, value in _flatten("", texts)
        ),
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()
