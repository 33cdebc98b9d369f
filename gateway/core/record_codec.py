"""The records' codec: one home for their field sets, building, encoding and decoding.

The recording path builds a record per request, the forwarder decodes every stored body and
the sinks write each field; all of them take the field set from here (``RECORD_FIELDS``,
computed once in ``model``) so a new field cannot be missed by one of them.

Three kinds travel through the outbox: consent records (no ``kind`` key: the hot path and
every body stored before preferences existed), preference records and identity links, whose
JSON holds ``"kind":"preference"`` or ``"kind":"identity_link"``, so a sink can route a stored
body without decoding it: those characters cannot appear in a consent record (its nested
keys are purpose ids and signal names, and a quote inside a JSON string is escaped).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.core.model import RECORD_COLUMNS, RECORD_FIELDS, ConsentRecord
from gateway.core.preference_record import (
    LINK_KIND,
    PREFERENCE_COLUMNS,
    PREFERENCE_FIELDS,
    PREFERENCE_KIND,
    LinkRecord,
    PreferenceRecord,
)

__all__ = [
    "CONSENT_KIND",
    "LINK_KIND",
    "PREFERENCE_COLUMNS",
    "PREFERENCE_FIELDS",
    "PREFERENCE_KIND",
    "RECORD_COLUMNS",
    "RECORD_FIELDS",
    "Record",
    "decode_object",
    "decode_record",
    "encode_record",
    "kind_of",
    "kind_of_body",
    "new_record",
    "record_from_object",
]

Record = ConsentRecord | PreferenceRecord | LinkRecord
CONSENT_KIND = "consent"
_PREFERENCE_MARK = '"kind":"preference"'
_LINK_MARK = '"kind":"identity_link"'


def kind_of(obj: Mapping[str, Any]) -> str:
    """A record object's kind: ``consent`` (no ``kind`` key), ``preference``, ``identity_link``."""
    kind = obj.get("kind")
    return CONSENT_KIND if kind is None else str(kind)


def kind_of_body(body: str) -> str:
    """A stored body's kind, without decoding it (see the module's docstring)."""
    if _PREFERENCE_MARK in body:
        return PREFERENCE_KIND
    return LINK_KIND if _LINK_MARK in body else CONSENT_KIND


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


def record_from_object(data: Mapping[str, Any]) -> Record:
    """A record from its JSON object; raises ValueError/KeyError/TypeError if it is not one."""
    kind = data.get("kind")
    if kind is not None:
        return LinkRecord.from_json(data) if kind == LINK_KIND else PreferenceRecord.from_json(data)
    if _FAST and type(data) is dict and data.keys() == RECORD_FIELDS:
        return new_record(data)
    return ConsentRecord.from_json(data)


def decode_record(body: str | bytes) -> Record:
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
    if type(obj) is dict and obj.get("kind") is not None:
        try:
            return record_from_object(obj).as_json(), ""
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return {}, f"not a {str(obj.get('kind'))[:40]} record: {exc!r}"
    try:  # written by another version: the record's own decoder says what it means
        return ConsentRecord.from_json(obj).as_json(), ""
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return {}, f"not a consent record: {exc!r}"


def encode_record(record: Record) -> bytes:
    """The record's stored JSON (field order, no whitespace)."""
    return orjson.dumps(record.plain_json())
