"""Sans-IO core of recording a preference change: validate a parsed body, then enrich it.

The body (ARCHITECTURE, round two): ``subject_id`` (with ``subject_secret`` from a browser or
app), ``preferences`` = ``{"channels": {id: bool}, "topics": {id: {"enabled": bool,
"frequency": str or null}}}``, optional ``product_line``, ``channel``, ``evidence``,
``language``, ``idempotency_key``, ``attempt`` (which send of the body this is: a retry is
looked up in the store, recording/store_retries.py). ``400`` for a malformed body or field,
``422`` (naming the field) for a channel, topic, frequency or product line the site does not
declare.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from gateway.core.errors import BadRequest
from gateway.core.model import Site
from gateway.core.preference_change import validate as validate_change
from gateway.core.preference_change import with_default_frequency
from gateway.core.preference_record import (
    EVIDENCE_METHODS,
    PREFERENCE_CHANNELS,
    PREFERENCE_KIND,
    PreferenceRecord,
)
from gateway.recording.fields import (
    KEY_RE,
    LANGUAGE_RE,
    MAX_ORIGIN,
    MAX_USER_AGENT,
    attempt_field,
    bounded_text,
    optional_field,
    truncate_ip,
)

# Who may say which channel: a subject's own secret is held by a browser, an app or a
# mini-program; an API key records on the subject's behalf for every channel but the web.
SUBJECT_CHANNELS = ("web", "app", "miniprogram")
API_CHANNELS = tuple(c for c in PREFERENCE_CHANNELS if c != "web")
# Offline collection must say who collected the choice, how, and where to find the proof.
OFFLINE_CHANNELS = ("store", "callcenter")
MAX_EVIDENCE_TEXT = 200
EVIDENCE_TEXT = ("collected_by", "reference", "location", "note")
_LINE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
BODY_KEYS = frozenset(
    {
        "subject_id",
        "subject_secret",
        "identity",
        "preferences",
        "product_line",
        "channel",
        "evidence",
        "language",
        "idempotency_key",
        "attempt",
    }
)


class ValidatedPreference(NamedTuple):
    """A preference body that passed every check, for one subject."""

    site: str
    subject_id: str
    product_line: str
    preferences: Mapping[str, Any]
    channel: str
    evidence: Mapping[str, Any] | None
    language: str | None
    idempotency_key: str | None
    attempt: int = 1  # the client's count of its sends of this body (never stored)


class PreferenceContext(NamedTuple):
    """What the server knows about the request (``ip`` raw here, truncated by enrich)."""

    ip: str | None
    user_agent: str
    origin: str
    language: str
    actor: str  # "subject", "api_key:<key id>" or "unsubscribe"


def _invalid(detail: str, field: str) -> BadRequest:
    return BadRequest("invalid_field", detail, field=field)


def evidence_of(value: Any, channel: str) -> dict[str, Any] | None:
    """The evidence object, checked; required for offline channels."""
    if value is None:
        if channel in OFFLINE_CHANNELS:
            raise BadRequest(
                "missing_field",
                f"a choice collected through {channel} needs evidence: collected_by, method "
                "and a reference to the form or call",
                field="evidence",
            )
        return None
    if not isinstance(value, dict):
        raise _invalid("evidence must be an object", "evidence")
    allowed = {*EVIDENCE_TEXT, "method", "collected_at"}
    for key in value:
        if key not in allowed:
            raise _invalid(f"unknown key; allowed: {', '.join(sorted(allowed))}", "evidence")
    out: dict[str, Any] = {}
    for key in EVIDENCE_TEXT:
        item = value.get(key)
        if item is None:
            continue
        if not isinstance(item, str) or not item.strip() or len(item) > MAX_EVIDENCE_TEXT:
            raise _invalid(f"1-{MAX_EVIDENCE_TEXT} characters of text", f"evidence.{key}")
        out[key] = bounded_text(item.strip(), MAX_EVIDENCE_TEXT)
    if "collected_by" not in out:
        raise BadRequest("missing_field", "who collected it", field="evidence.collected_by")
    method = value.get("method")
    if method not in EVIDENCE_METHODS:
        raise _invalid(f"one of {', '.join(EVIDENCE_METHODS)}", "evidence.method")
    out["method"] = method
    at = value.get("collected_at")
    if at is not None:
        out["collected_at"] = _moment(at)
    return out


def _moment(value: Any) -> str:
    """An RFC 3339 time with an offset, not in the future, as UTC text."""
    field = "evidence.collected_at"
    if not isinstance(value, str) or len(value) > 40:
        raise _invalid("an RFC 3339 time such as 2026-12-06T10:00:00Z", field)
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _invalid("an RFC 3339 time such as 2026-12-06T10:00:00Z", field) from exc
    if moment.tzinfo is None:
        raise _invalid("the time needs an offset (Z or +hh:mm)", field)
    if moment > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5):
        raise _invalid("the time is in the future", field)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate(
    body: Mapping[str, Any], site: Site, subject_id: str, *, via_api: bool
) -> ValidatedPreference:
    """Check a parsed body (its subject already proven) against the site's model."""
    for key in body:
        if key not in BODY_KEYS:
            raise BadRequest(
                "unknown_field",
                f"unknown field; allowed: {', '.join(sorted(BODY_KEYS))}",
                field=str(key)[:40],
            )
    allowed = API_CHANNELS if via_api else SUBJECT_CHANNELS
    channel = body.get("channel", "api" if via_api else "web")
    if channel not in allowed:
        raise _invalid(
            f"channel must be one of {', '.join(allowed)}"
            + (" (an API key records for the other channels)" if not via_api else ""),
            "channel",
        )
    line = body.get("product_line")
    if line is None:
        line = ""
    if not isinstance(line, str) or (line and not _LINE_RE.fullmatch(line)):
        raise _invalid("a product line id", "product_line")
    if "preferences" not in body:
        raise BadRequest("missing_field", "preferences is required", field="preferences")
    model = site.preferences
    change = with_default_frequency(model, validate_change(model, body["preferences"], line))
    return ValidatedPreference(
        site=site.id,
        subject_id=subject_id,
        product_line=line,
        preferences=change,
        channel=channel,
        evidence=evidence_of(body.get("evidence"), channel),
        language=optional_field(body, "language", LANGUAGE_RE, "a language tag such as de"),
        idempotency_key=optional_field(
            body, "idempotency_key", KEY_RE, "1-128 printable ASCII characters"
        ),
        attempt=attempt_field(body),
    )


def enrich(
    change: ValidatedPreference,
    context: PreferenceContext,
    *,
    record_id: str,
    recorded_at: str,
    node_id: str,
) -> PreferenceRecord:
    """Add what only the server knows; the result is the record as stored."""
    return PreferenceRecord(
        kind=PREFERENCE_KIND,
        record_id=record_id,
        recorded_at=recorded_at,
        site=change.site,
        subject_id=change.subject_id,
        product_line=change.product_line,
        preferences=change.preferences,
        channel=change.channel,
        evidence=change.evidence,
        actor=context.actor,
        language=change.language or context.language,
        ip_truncated=truncate_ip(context.ip),
        user_agent=bounded_text(context.user_agent, MAX_USER_AGENT),
        origin=bounded_text(context.origin, MAX_ORIGIN),
        node_id=node_id,
        idempotency_key=change.idempotency_key,
    )
