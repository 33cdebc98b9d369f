"""The record codec: one field set, and every way of building or decoding a record agrees."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from gateway.core.model import RECORD_COLUMNS, RECORD_FIELDS, ConsentRecord
from gateway.core.record_codec import (
    decode_object,
    decode_record,
    encode_record,
    new_record,
    record_from_object,
)
from gateway.sinks import postgres
from tests.pg import make_record


def test_the_field_set_is_the_dataclass_in_order_and_the_sinks_use_it() -> None:
    assert tuple(f.name for f in dataclasses.fields(ConsentRecord)) == RECORD_COLUMNS
    assert frozenset(RECORD_COLUMNS) == RECORD_FIELDS
    assert postgres.COLUMNS == RECORD_COLUMNS  # one table column per field, in field order


def test_every_way_of_building_a_record_gives_the_same_record() -> None:
    record = make_record("codec", withdraws=None, signals={"tcf": "x"})
    data = record.as_json()
    assert new_record(dict(data)) == record
    assert record_from_object(dict(data)) == record
    assert decode_record(encode_record(record)) == record
    assert orjson.loads(encode_record(record)) == data
    # An older body without the fields added since: the model's own decoder fills them in.
    older = {k: v for k, v in data.items() if k not in ("signals", "withdraws")}
    assert record_from_object(older) == dataclasses.replace(record, signals={})


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"\x00\xff", "not JSON"),
        (b"[1, 2]", "not a consent record"),
        (b'{"record_id": "x"}', "not a consent record"),
    ],
)
def test_decode_object_says_why_a_body_is_not_a_record(body: bytes, problem: str) -> None:
    obj, why = decode_object(body)
    assert obj == {}
    assert why.startswith(problem)


def test_decode_object_returns_the_stored_object() -> None:
    record = make_record("d")
    assert decode_object(orjson.dumps(record.as_json())) == (record.as_json(), "")
