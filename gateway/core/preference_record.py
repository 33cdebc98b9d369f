"""The records beside consents: preference changes and identity links, as stored.

A preference record travels through the same outbox, forwarder and sinks as a consent, gets
the same signed receipt and is chained into the same audit trail. An identity link is made
in the directory at once (lookups need it) and recorded through the outbox too, so that the
stores keep its history and the webhook and NATS hear of it. Their JSON carries ``"kind"``
(a consent record has none), which is how the codec (core/record_codec.py) and the sinks
tell them apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PREFERENCE_KIND = "preference"
LINK_KIND = "identity_link"

# Who collects preferences (the record's ``channel``): the web (a browser with the subject's
# secret) and, on the subject's behalf with an API key, apps, mini-programs, stores, e-mail
# (one-click unsubscribe), call centres and other systems.
PREFERENCE_CHANNELS: tuple[str, ...] = (
    "web",
    "app",
    "miniprogram",
    "store",
    "email",
    "callcenter",
    "api",
)
# How an offline choice was collected (the evidence's ``method``).
EVIDENCE_METHODS: tuple[str, ...] = (
    "paper_form",
    "tablet",
    "verbal",
    "phone_call",
    "email",
    "one_click",
    "app",
    "other",
)


@dataclass(frozen=True)
class PreferenceRecord:
    """A preference change for one subject and product line ("" = site-wide)."""

    kind: str  # always PREFERENCE_KIND
    record_id: str
    recorded_at: str  # RFC 3339 UTC, microseconds
    site: str
    subject_id: str
    product_line: str
    preferences: Mapping[str, Any]  # the change, validated: {"channels": …, "topics": …}
    channel: str  # a PREFERENCE_CHANNELS entry
    evidence: Mapping[str, Any] | None  # offline collection: collected_by, method, reference…
    actor: str  # "subject" (its secret), "api_key:<key id>", "unsubscribe" (a signed link)
    language: str
    ip_truncated: str | None
    user_agent: str
    origin: str
    node_id: str
    idempotency_key: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copy measured ~70 µs a record, on the request path.
        return {
            **self.__dict__,
            "preferences": _plain(self.preferences),
            "evidence": None if self.evidence is None else dict(self.evidence),
            "extra": dict(self.extra),
        }

    def plain_json(self) -> Mapping[str, Any]:
        """``as_json()``'s keys and values, read-only: the instance's own dict when its
        mappings are plain dicts (as the request path builds them). Never modify the result."""
        data = self.__dict__
        if (
            type(self.preferences) is dict
            and type(self.extra) is dict
            and (self.evidence is None or type(self.evidence) is dict)
            and data.keys() == PREFERENCE_FIELDS
        ):
            return data
        return self.as_json()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreferenceRecord:
        if data.get("kind") != PREFERENCE_KIND:
            raise ValueError("not a preference record")
        evidence = data.get("evidence")
        return cls(
            kind=PREFERENCE_KIND,
            record_id=str(data["record_id"]),
            recorded_at=str(data["recorded_at"]),
            site=str(data["site"]),
            subject_id=str(data["subject_id"]),
            product_line=str(data["product_line"]),
            preferences=_plain(data["preferences"]),
            channel=str(data["channel"]),
            evidence=None if evidence is None else dict(evidence),
            actor=str(data["actor"]),
            language=str(data.get("language") or ""),
            ip_truncated=data.get("ip_truncated"),
            user_agent=str(data.get("user_agent") or ""),
            origin=str(data.get("origin") or ""),
            node_id=str(data["node_id"]),
            idempotency_key=data.get("idempotency_key"),
            extra=dict(data.get("extra") or {}),
        )


def _plain(value: Any) -> Any:
    """Nested mappings as plain dicts (what JSON gives back)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


PREFERENCE_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(PreferenceRecord))
PREFERENCE_FIELDS = frozenset(PREFERENCE_COLUMNS)


@dataclass(frozen=True)
class LinkRecord:
    """A subject linked to an identity, known by its keyed hash only (never its value)."""

    kind: str  # always LINK_KIND
    record_id: str
    recorded_at: str
    site: str
    subject_id: str
    identity_type: str
    identity_hash: str
    source: str  # "api", "token" (an identity token), "unsubscribe"
    node_id: str
    idempotency_key: str | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def plain_json(self) -> Mapping[str, Any]:
        return self.__dict__

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LinkRecord:
        if data.get("kind") != LINK_KIND:
            raise ValueError("not an identity link record")
        return cls(**{f: data[f] for f in LINK_COLUMNS if f != "idempotency_key"})


LINK_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LinkRecord))
