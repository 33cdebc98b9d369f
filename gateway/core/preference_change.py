"""A preference change checked against the site's model, and merged into a state. Pure.

The shape (ARCHITECTURE, round two): ``{"channels": {id: bool}, "topics": {id: {"enabled":
bool, "frequency": str or null, "channels": {id: bool}}}}``. A change names only what it
changes; ``apply`` merges it into the subject's current state, so a one-click unsubscribe
from one topic's e-mails leaves everything else as the customer set it.

The stores merge changes leaf by leaf, last writer wins (``merge``): every leaf (a channel, a
topic's ``enabled``, ``frequency`` or one of its channels) remembers the stamp (recorded_at,
record_id) of the change that set it, so changes delivered late, twice or in any order (the
forwarder runs two workers) give the same state as in the order they were recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.core.errors import BadRequest
from gateway.core.preference_model import PreferenceModel, Topic

TOPIC_KEYS = frozenset({"enabled", "frequency", "channels"})


def _fail(code: str, detail: str, field: str) -> BadRequest:
    return BadRequest(code, detail, field=field[:200], status_code=422)


def _flags(value: Any, allowed: tuple[str, ...], field: str, what: str) -> dict[str, bool]:
    if not isinstance(value, dict):
        raise _fail(
            "invalid_preferences", f"{field} must be an object of {what} → true/false", field
        )
    out: dict[str, bool] = {}
    for key, flag in value.items():
        if key not in allowed:
            raise _fail(
                f"unknown_{what}",
                f"{key[:40]!r} is not one of {', '.join(allowed)}",
                f"{field}.{key[:40]}",
            )
        if not isinstance(flag, bool):
            raise _fail("invalid_preferences", "expected true or false", f"{field}.{key}")
        out[key] = flag
    return out


def _topic(topic: Topic, value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail("invalid_preferences", 'expected {"enabled": …, "frequency": …}', field)
    unknown = sorted(set(value) - TOPIC_KEYS)
    if unknown:
        raise _fail(
            "invalid_preferences", f"unknown key {unknown[0][:40]!r}", f"{field}.{unknown[0][:40]}"
        )
    out: dict[str, Any] = {}
    if "enabled" in value:
        if not isinstance(value["enabled"], bool):
            raise _fail("invalid_preferences", "expected true or false", f"{field}.enabled")
        out["enabled"] = value["enabled"]
    if "frequency" in value:
        frequency = value["frequency"]
        if frequency is not None and frequency not in topic.frequencies:
            offered = ", ".join(topic.frequencies) or "none (leave it null)"
            raise _fail(
                "unknown_frequency", f"topic {topic.id!r} offers {offered}", f"{field}.frequency"
            )
        out["frequency"] = frequency
    if "channels" in value:
        out["channels"] = _flags(value["channels"], topic.channels, f"{field}.channels", "channel")
    return out


def validate(model: PreferenceModel, data: Any, product_line: str = "") -> dict[str, Any]:
    """The change in canonical form, or a 422 naming the field; empty changes are refused."""
    if not isinstance(data, dict):
        raise _fail("invalid_preferences", 'expected {"channels": …, "topics": …}', "preferences")
    unknown = sorted(set(data) - {"channels", "topics"})
    if unknown:
        raise _fail(
            "invalid_preferences",
            f"unknown key {unknown[0][:40]!r}",
            f"preferences.{unknown[0][:40]}",
        )
    if product_line and model.product_line(product_line) is None:
        raise _fail(
            "unknown_product_line",
            "the site declares product lines "
            f"{', '.join(p.id for p in model.product_lines) or 'none'}",
            "product_line",
        )
    out: dict[str, Any] = {}
    if "channels" in data:
        ids = tuple(c.id for c in model.channels)
        out["channels"] = _flags(data["channels"], ids, "preferences.channels", "channel")
    if "topics" in data:
        topics = data["topics"]
        if not isinstance(topics, dict):
            raise _fail(
                "invalid_preferences", "expected an object of topic → choice", "preferences.topics"
            )
        out["topics"] = {}
        for key, value in topics.items():
            topic = model.topic(key)
            field = f"preferences.topics.{key[:40]}"
            if topic is None:
                raise _fail(
                    "unknown_topic",
                    f"the site declares topics {', '.join(t.id for t in model.topics) or 'none'}",
                    field,
                )
            if product_line and topic.product_lines and product_line not in topic.product_lines:
                raise _fail(
                    "topic_not_in_product_line",
                    f"topic {topic.id!r} belongs to {', '.join(topic.product_lines)}",
                    field,
                )
            out["topics"][key] = _topic(topic, value, field)
    if not any(out.values()):
        raise _fail(
            "invalid_preferences", "the change names no channel and no topic", "preferences"
        )
    return out


def apply(current: Mapping[str, Any] | None, change: Mapping[str, Any]) -> dict[str, Any]:
    """The state after a validated change: channels and topics merged key by key."""
    base = current or {}
    channels = {**base.get("channels", {}), **change.get("channels", {})}
    topics = {key: dict(value) for key, value in base.get("topics", {}).items()}
    for key, value in change.get("topics", {}).items():
        merged = topics.setdefault(key, {})
        for field, item in value.items():
            if field == "channels":
                merged["channels"] = {**merged.get("channels", {}), **item}
            else:
                merged[field] = item
    return {"channels": channels, "topics": topics}


def with_default_frequency(model: PreferenceModel, change: Mapping[str, Any]) -> dict[str, Any]:
    """The change with each topic turned on without a frequency at its default one: the
    record then says what the customer is opted into (and segments need not know defaults)."""
    topics: dict[str, Any] = {}
    for key, value in change.get("topics", {}).items():
        topic = model.topic(key)
        if (
            value.get("enabled") is True
            and "frequency" not in value
            and topic is not None
            and topic.default_frequency
        ):
            value = {**value, "frequency": topic.default_frequency}
        topics[key] = value
    return {**change, "topics": topics} if "topics" in change else dict(change)


def merge(
    state: Mapping[str, Any] | None,
    stamps: Mapping[str, str],
    change: Mapping[str, Any],
    stamp: str,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The state and leaf stamps after a change stamped ``stamp`` (``recorded_at|record_id``,
    fixed width, so text order is time order): each leaf it sets (``channels/email``,
    ``topics/offers/frequency``, ``topics/offers/channels/email``) moves only if its own
    stamp is older. Idempotent and independent of the order changes arrive in. Copies what it
    changes, never the caller's mappings (the stores' fold runs per delivered record)."""
    base = state or {}
    channels = dict(base.get("channels", {}))
    topics = dict(base.get("topics", {}))
    out_stamps = dict(stamps)
    for channel, flag in change.get("channels", {}).items():
        path = "channels/" + channel
        if stamp > out_stamps.get(path, ""):
            out_stamps[path] = stamp
            channels[channel] = flag
    for topic, value in change.get("topics", {}).items():
        current: dict[str, Any] | None = None
        prefix = "topics/" + topic + "/"
        for field, item in value.items():
            if field == "channels":
                own: dict[str, bool] | None = None
                for channel, flag in item.items():
                    path = prefix + "channels/" + channel
                    if stamp > out_stamps.get(path, ""):
                        out_stamps[path] = stamp
                        if current is None:
                            current = topics[topic] = dict(topics.get(topic, {}))
                        if own is None:
                            own = current["channels"] = dict(current.get("channels", {}))
                        own[channel] = flag
            elif stamp > out_stamps.get(prefix + field, ""):
                out_stamps[prefix + field] = stamp
                if current is None:
                    current = topics[topic] = dict(topics.get(topic, {}))
                current[field] = item
    return {"channels": channels, "topics": topics}, out_stamps
