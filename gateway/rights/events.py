"""Rights request events for the webhook (and later the event bus). Pure: no I/O.

Each event is ``{"id", "type", "time", "request": {...}}`` (the envelope every event of the
gateway shares, gateway/core/events.py), one JSON schema for the three
types (EVENT_SCHEMA, also in the README). Identities appear as linked: their type and keyed
hash, never their value. Delivered at least once: receivers dedupe on ``id``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.core.events import envelope
from gateway.sinks.rights import StoredRequest, SystemPart

CREATED = "rights_request.created"
UPDATED = "rights_request.updated"
COMPLETED = "rights_request.completed"
TYPES = (CREATED, UPDATED, COMPLETED)

_STR_OR_NULL = {"type": ["string", "null"]}
EVENT_SCHEMA: Mapping[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "rights_request event",
    "type": "object",
    "required": ["id", "type", "time", "request"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "description": "unique per event; dedupe on it"},
        "type": {"enum": list(TYPES)},
        "time": {"type": "string", "format": "date-time"},
        "change": {
            "type": "string",
            "description": "updated only: verified, extended, denied, system_confirmed, "
            "gateway_done, reminder, escalation",
        },
        "system": {"type": "string", "description": "the system a reminder is about"},
        "request": {
            "type": "object",
            "required": [
                "request_id", "site", "type", "state", "received_at", "due_at", "rule_id",
                "region", "subject_ids", "identity", "reason", "systems",
            ],
            "properties": {
                "request_id": {"type": "string"},
                "site": {"type": "string"},
                "type": {"type": "string"},
                "state": {"type": "string"},
                "received_at": {"type": "string"},
                "due_at": {"type": "string"},
                "rule_id": {"type": "string"},
                "region": {"type": "object"},
                "subject_ids": {"type": "array", "items": {"type": "string"}},
                "identity": {
                    "type": ["object", "null"],
                    "properties": {"type": {"type": "string"}, "hash": {"type": "string"}},
                },
                "details": {"type": "object"},
                "reason": {"type": "string"},
                "systems": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["system", "required", "state"],
                        "properties": {
                            "system": {"type": "string"},
                            "required": {"type": "boolean"},
                            "state": {"type": "string"},
                            "confirmed_at": _STR_OR_NULL,
                        },
                    },
                },
            },
        },
    },
}  # fmt: skip


def request_view(request: StoredRequest, systems: Sequence[SystemPart]) -> dict[str, Any]:
    identity = (
        {"type": request.identity_type, "hash": request.identity_hash}
        if request.identity_hash
        else None
    )
    return {
        "request_id": request.request_id,
        "site": request.site,
        "type": request.type,
        "state": request.state,
        "received_at": request.received_at,
        "due_at": request.due_at,
        "rule_id": request.rule_id,
        "region": dict(request.region),
        "subject_ids": list(request.subject_ids),
        "identity": identity,
        "details": dict(request.details),
        "reason": request.reason,
        "systems": [
            {
                "system": s.system,
                "required": s.required,
                "state": s.state,
                "confirmed_at": s.confirmed_at,
            }
            for s in systems
        ],
    }


def event(
    type_: str,
    at: str,
    request: StoredRequest,
    systems: Sequence[SystemPart],
    change: str = "",
    system: str = "",
) -> tuple[str, dict[str, Any]]:
    body = envelope(type_, str(uuid.uuid4()), at, request=request_view(request, systems))
    if change:
        body["change"] = change
    if system:
        body["system"] = system
    return type_, body
