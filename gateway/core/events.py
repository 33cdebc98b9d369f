"""Events for CDPs and marketing automation: one envelope for every type, and their schemas.

Every event is ``{"id", "type", "time", …payload}``: ``id`` is unique per event (a record's
events take its record id, so a receiver dedupes redeliveries on it), ``time`` is RFC 3339
UTC. The record events (``consent.recorded``, ``preferences.updated``, ``identity.linked``)
add ``site`` and ``subject``: the subject id with the identities linked to it as ``{"type",
"hash"}`` (the keyed hash, never the address or number itself). Rights-request events
(gateway/rights/events.py) use the same envelope. Pure: the webhook sink builds these from
stored records and the directory's links. Schemas: ``SCHEMAS``, written to docs/events/.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.core.record_codec import LINK_KIND, PREFERENCE_KIND, kind_of

CONSENT_RECORDED = "consent.recorded"
PREFERENCES_UPDATED = "preferences.updated"
IDENTITY_LINKED = "identity.linked"
TYPE_OF_KIND = {"consent": CONSENT_RECORDED, PREFERENCE_KIND: PREFERENCES_UPDATED}
TYPE_OF_KIND[LINK_KIND] = IDENTITY_LINKED


def envelope(type_: str, id_: str, time: str, **payload: Any) -> dict[str, Any]:
    """The one event envelope: ``id``, ``type``, ``time``, then the type's own fields."""
    return {"id": id_, "type": type_, "time": time, **payload}


def record_event(
    record: Mapping[str, Any], identities: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """The event of a stored record (its JSON object), with its subject's linked identities."""
    kind = kind_of(record)
    subject = {
        "subject_id": record["subject_id"],
        "identities": [{"type": t, "hash": h} for t, h in identities],
    }
    payload: dict[str, Any]
    if kind == PREFERENCE_KIND:
        payload = {
            "preferences": {
                "record_id": record["record_id"],
                "product_line": record["product_line"],
                "changes": record["preferences"],
                "channel": record["channel"],
                "evidence": record["evidence"],
                "actor": record["actor"],
                "language": record["language"],
            }
        }
    elif kind == LINK_KIND:
        payload = {
            "identity": {
                "type": record["identity_type"],
                "hash": record["identity_hash"],
                "source": record["source"],
            }
        }
    else:
        payload = {
            "consent": {
                "record_id": record["record_id"],
                "action": record["action"],
                "choices": record["choices"],
                "channel": record["channel"],
                "banner_version": record["banner_version"],
                "consent_revision": record["consent_revision"],
                "language": record["language"],
                "rule_id": record["rule_id"],
                "region": {
                    "country": record["region_country"],
                    "subdivision": record["region_subdivision"],
                },
                "gpc": record["gpc"],
                "withdraws": record["withdraws"],
            }
        }
    return envelope(
        TYPE_OF_KIND[kind],
        record["record_id"],
        record["recorded_at"],
        site=record["site"],
        subject=subject,
        **payload,
    )


_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}
_FLAGS = {"type": "object", "additionalProperties": {"type": "boolean"}}
_IDENTITY_PROPERTIES: dict[str, Any] = {
    "type": {**_STR, "description": "email, phone, customer_id, … or a site's own type"},
    "hash": {
        "type": "string",
        "pattern": "^[0-9a-f]{64}$",
        "description": "HMAC-SHA256 of site NUL type NUL normalized value, under the "
        "deployment's identity key: compare with hashes you compute the same way, or "
        "look the identity up through the subjects API",
    },
}
_IDENTITY = {
    "type": "object",
    "required": ["type", "hash"],
    "additionalProperties": False,
    "properties": _IDENTITY_PROPERTIES,
}


def _schema(type_: str, title: str, key: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://consent-gateway.dev/events/{type_}.schema.json",
        "title": title,
        "type": "object",
        "required": ["id", "type", "time", "site", "subject", key],
        "additionalProperties": False,
        "properties": {
            "id": {**_STR, "description": "the record id: unique, dedupe on it"},
            "type": {"const": type_},
            "time": {**_STR, "format": "date-time", "description": "when it was recorded"},
            "site": _STR,
            "subject": {
                "type": "object",
                "required": ["subject_id", "identities"],
                "additionalProperties": False,
                "properties": {
                    "subject_id": {**_STR, "pattern": "^[0-9a-f]{32}$"},
                    "identities": {
                        "type": "array",
                        "items": _IDENTITY,
                        "description": "every identity linked to the subject, as linked",
                    },
                },
            },
            key: body,
        },
    }


_TOPIC_CHANGE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "enabled": {"type": "boolean"},
        "frequency": _STR_OR_NULL,
        "channels": _FLAGS,
    },
}

SCHEMAS: Mapping[str, Mapping[str, Any]] = {
    CONSENT_RECORDED: _schema(
        CONSENT_RECORDED,
        "A consent was recorded (a banner choice, a withdrawal, a GPC signal)",
        "consent",
        {
            "type": "object",
            "required": ["record_id", "action", "choices", "channel", "banner_version"],
            "additionalProperties": False,
            "properties": {
                "record_id": _STR,
                "action": {"enum": ["accept_all", "reject_all", "custom", "withdraw", "gpc"]},
                "choices": {**_FLAGS, "description": "every purpose of the site: granted?"},
                "channel": _STR,
                "banner_version": _STR,
                "consent_revision": _STR,
                "language": _STR,
                "rule_id": _STR,
                "region": {
                    "type": "object",
                    "properties": {"country": _STR_OR_NULL, "subdivision": _STR_OR_NULL},
                },
                "gpc": {"type": "boolean"},
                "withdraws": _STR_OR_NULL,
            },
        },
    ),
    PREFERENCES_UPDATED: _schema(
        PREFERENCES_UPDATED,
        "A subject's contact preferences changed (channels, topics, frequencies)",
        "preferences",
        {
            "type": "object",
            "required": ["record_id", "product_line", "changes", "channel", "actor"],
            "additionalProperties": False,
            "properties": {
                "record_id": _STR,
                "product_line": {**_STR, "description": "empty: site-wide"},
                "changes": {
                    "type": "object",
                    "description": "only what this change set; the rest stays as it was",
                    "additionalProperties": False,
                    "properties": {
                        "channels": _FLAGS,
                        "topics": {"type": "object", "additionalProperties": _TOPIC_CHANGE},
                    },
                },
                "channel": {
                    "enum": ["web", "app", "miniprogram", "store", "email", "callcenter", "api"]
                },
                "evidence": {
                    "type": ["object", "null"],
                    "description": "how an offline choice was collected",
                    "properties": {
                        "collected_by": _STR,
                        "method": _STR,
                        "reference": _STR,
                        "location": _STR,
                        "note": _STR,
                        "collected_at": _STR,
                    },
                },
                "actor": {
                    **_STR,
                    "description": "subject (its own secret), api_key:<key id>, unsubscribe",
                },
                "language": _STR,
            },
        },
    ),
    IDENTITY_LINKED: _schema(
        IDENTITY_LINKED,
        "A subject was linked to an identity",
        "identity",
        {
            "type": "object",
            "required": ["type", "hash", "source"],
            "additionalProperties": False,
            "properties": {
                **_IDENTITY_PROPERTIES,
                "source": {"enum": ["api", "token", "unsubscribe"]},
            },
        },
    ),
}
