"""The consent record's codec: one home for its field set, building, encoding and decoding.

The recording path builds a record per request, the forwarder decodes every stored body and
the sinks write each field; all of them take the field set from here (``RECORD_FIELDS``,
computed once in ``model``) so a new field cannot be missed by one of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.core.model import RECORD_COLUMNS, RECORD_FIELDS, ConsentRecord

__all__ = [
    "RECORD_COLUMNS",
    "RECORD_FIELDS",
    "decode_object",
    "decode_record",
    "encode_record",
    "new_record",
    "record_from_object",
]

# Measured: the frozen dataclass __init__ costs ~17 µs per record (one object.__setattr__
# per field), filling __dict__ ~2 µs; the request path builds a record per request and the
# forwarder decodes every record, so this is most of their record-handling CPU.
_FAST = not hasattr(ConsentRecord, "__slots__")


def new_record(fields: dict[str, Any]) -> ConsentRecord:
    """``ConsentRecord(**fields)`` for a dict that names every field (the caller's to give)."""
    if not _FAST:
        return ConsentRecord(**fields)
    record: ConsentRecord = object.__new__(ConsentRecord)
    record.__dict__.update(fields)
    return record


def record_from_object(data: Mapping[str, Any]) -> ConsentRecord:
    """A record from its JSON object; raises ValueError/KeyError/TypeError if it is not one."""
    if _FAST and type(data) is dict and data.keys() == RECORD_FIELDS:
        return new_record(data)
    return ConsentRecord.from_json(data)


def decode_record(body: str | bytes) -> ConsentRecord:
    """A record from its stored JSON; raises ValueError/KeyError/TypeError if it is not one."""
    return record_from_object(orjson.loads(body))


def decode_object(body: str | bytes) -> tuple[dict[str, Any], str]:
    """A stored body's JSON object with exactly a record's keys and "", or ({}, why not)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return {}, f"not JSON: {exc}"
    if type(obj) is dict and obj.keys() == RECORD_FIELDS:
        return obj, ""
    try:  # written by another version: the record's own decoder says what it means
        return ConsentRecord.from_json(obj).as_json(), ""
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return {}, f"not a consent record: {exc!r}"


def encode_record(record: ConsentRecord) -> bytes:
    """The record's stored JSON (field order, no whitespace)."""
    return orjson.dumps(record.plain_json())
