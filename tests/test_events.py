"""The event envelope and the documented schemas: every kind of record makes a valid event."""

from __future__ import annotations

import jsonschema
import orjson

from gateway.cli.docs import event_schemas
from gateway.core.events import record_event
from gateway.core.record_codec import Record
from gateway.rights import events as rights_events
from tests.helpers import ROOT
from tests.pg import make_record
from tests.test_preference_records import link_record, preference

LINKED = [("email", "ab" * 32), ("customer_id", "cd" * 32)]


def validate(event: dict[str, object]) -> None:
    schema = event_schemas()[str(event["type"])]
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(
        event
    )


def test_every_record_kind_is_a_valid_event_with_its_identities_as_linked() -> None:
    subject = "0" * 32
    records: list[Record] = [
        make_record(subject, withdraws=None),
        preference(subject, {"topics": {"offers": {"enabled": True, "frequency": "weekly"}}},
                   evidence={"collected_by": "clerk", "method": "tablet"}),
        link_record(subject),
    ]  # fmt: skip
    for record in records:
        event = record_event(record.as_json(), LINKED)
        validate(event)
        assert event["id"] == record.record_id and event["time"] == record.recorded_at
        assert event["subject"] == {
            "subject_id": subject,
            "identities": [{"type": t, "hash": h} for t, h in LINKED],
        }
    types = [record_event(r.as_json(), []).get("type") for r in records]
    assert types == ["consent.recorded", "preferences.updated", "identity.linked"]


def test_rights_events_share_the_envelope_and_their_schemas_are_documented() -> None:
    for type_ in rights_events.TYPES:
        schema = event_schemas()[type_]
        assert schema["properties"]["type"] == {"const": type_}
    for type_, schema in event_schemas().items():
        path = ROOT / "docs" / "events" / f"{type_}.schema.json"
        assert orjson.loads(path.read_bytes()) == schema
