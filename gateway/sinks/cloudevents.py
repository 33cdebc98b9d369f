"""CloudEvents 1.0 envelopes for records: one structured-mode (JSON) event per record.

A batch travels in the HTTP binding's batched content mode, a JSON array of such events with
``Content-Type: application/cloudevents-batch+json``; each element is exactly the
structured-mode event a single-event receiver would get as ``application/cloudevents+json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.core.events import TYPE_OF_KIND
from gateway.core.record_codec import kind_of

SPEC_VERSION = "1.0"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"


def event_type(record: Mapping[str, Any]) -> str:
    """The event a record is: consent.recorded, preferences.updated or identity.linked."""
    return TYPE_OF_KIND[kind_of(record)]


def envelope(record: Mapping[str, Any], type_: str | None = None) -> dict[str, Any]:
    """The event for one record: ``id`` is the record id, so receivers dedupe on it."""
    return {
        "specversion": SPEC_VERSION,
        "id": record["record_id"],
        "source": f"/v1/sites/{record['site']}",
        "type": type_ or event_type(record),
        "subject": record["subject_id"],
        "time": record["recorded_at"],
        "datacontenttype": "application/json",
        "data": record,
    }


def wrap(event: Mapping[str, Any]) -> dict[str, Any]:
    """A CloudEvent carrying one of the gateway's events (core/events.py) as its data."""
    return {
        "specversion": SPEC_VERSION,
        "id": event["id"],
        "source": f"/v1/sites/{event['site']}",
        "type": event["type"],
        "subject": event["subject"]["subject_id"],
        "time": event["time"],
        "datacontenttype": "application/json",
        "data": event,
    }
