"""CloudEvents 1.0 envelopes for records: one structured-mode (JSON) event per record.

A batch travels in the HTTP binding's batched content mode, a JSON array of such events with
``Content-Type: application/cloudevents-batch+json``; each element is exactly the
structured-mode event a single-event receiver would get as ``application/cloudevents+json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SPEC_VERSION = "1.0"
CONSENT_RECORDED = "consent.recorded"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"


def envelope(record: Mapping[str, Any], event_type: str = CONSENT_RECORDED) -> dict[str, Any]:
    """The event for one record: ``id`` is the record id, so receivers dedupe on it."""
    return {
        "specversion": SPEC_VERSION,
        "id": record["record_id"],
        "source": f"/v1/sites/{record['site']}",
        "type": event_type,
        "subject": record["subject_id"],
        "time": record["recorded_at"],
        "datacontenttype": "application/json",
        "data": record,
    }
