"""May we contact this identity on this channel about this topic? Pure: decides from rows.

Topics are off until a subject turns them on, so anything short of a clear yes is a no, and
the reason says which part was missing. When an identity is linked to several subjects (a
phone and a laptop), the most specific state wins (the product line's over the site-wide
one), then the newest: the customer's last decision, wherever it was made.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import BadRequest
from gateway.core.preference_model import PreferenceModel, Topic
from gateway.sinks.directory import ContactRow

# Reasons, for the documentation and for callers that branch on them.
REASONS: Mapping[str, str] = {
    "opted_in": "the channel and the topic are on",
    "invalid_identity": "the identity is malformed or of a type the site does not know",
    "unknown_identity": "no subject is linked to the identity",
    "no_preferences": "linked, but no preferences recorded: topics are off until chosen",
    "channel_not_offered": "the site does not send this topic on this channel",
    "channel_off": "the subject turned this channel off",
    "channel_not_chosen": "the subject has not turned this channel on",
    "topic_off": "the subject turned this topic off",
    "topic_not_chosen": "the subject has not turned this topic on",
    "topic_channel_off": "the subject turned this topic off on this channel only",
}


@dataclass(frozen=True)
class Question:
    """What a caller asks about every identity of one batch."""

    channel: str
    topic: Topic
    product_line: str  # "" when not scoped


@dataclass(frozen=True)
class Answer:
    contact: bool
    reason: str
    frequency: str | None = None
    updated_at: str | None = None
    detail: str | None = None  # what is wrong with an invalid identity

    def as_json(self) -> dict[str, Any]:
        out = {
            "contact": self.contact,
            "reason": self.reason,
            "frequency": self.frequency,
            "updated_at": self.updated_at,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


def question(model: PreferenceModel, channel: Any, topic: Any, product_line: Any) -> Question:
    """Validate what is asked against the site's model; 422 naming the field otherwise."""
    if not isinstance(channel, str) or model.channel(channel) is None:
        raise BadRequest(
            "unknown_channel",
            f"the site declares channels {', '.join(c.id for c in model.channels) or 'none'}",
            field="channel",
            status_code=422,
        )
    found = model.topic(topic) if isinstance(topic, str) else None
    if found is None:
        raise BadRequest(
            "unknown_topic",
            f"the site declares topics {', '.join(t.id for t in model.topics) or 'none'}",
            field="topic",
            status_code=422,
        )
    line = "" if product_line is None else product_line
    if not isinstance(line, str) or (line and model.product_line(line) is None):
        raise BadRequest(
            "unknown_product_line",
            "the site declares product lines "
            f"{', '.join(p.id for p in model.product_lines) or 'none'}",
            field="product_line",
            status_code=422,
        )
    if line and found.product_lines and line not in found.product_lines:
        raise BadRequest(
            "topic_not_in_product_line",
            f"topic {found.id!r} belongs to {', '.join(found.product_lines)}",
            field="product_line",
            status_code=422,
        )
    return Question(channel, found, line)


def _deciding(
    q: Question, rows: Iterable[ContactRow]
) -> tuple[Mapping[str, Any] | None, str | None]:
    """The state that decides, and when it last changed: the product line's own rows if any
    have a state, else the site-wide ones; of several (devices), each leaf the question reads
    comes from the row that set it last (its stamp), so a change made on one device does not
    hide the choices made on another."""
    tier: list[ContactRow] = []
    own = False
    for row in rows:
        if row.preferences is None:
            continue
        mine = bool(q.product_line) and row.product_line == q.product_line
        if mine and not own:
            tier, own = [], True
        if mine == own:
            tier.append(row)
    if not tier:
        return None, None
    at = max(r.updated_at or "" for r in tier) or None
    if len(tier) == 1:
        return tier[0].preferences, at
    return _leafwise(q, tier), at


def _leafwise(q: Question, rows: list[ContactRow]) -> dict[str, Any]:
    """The leaves the question reads, each from the row whose stamp for it is newest (a row
    without stamps counts its own time for all of its leaves)."""
    channel, topic = q.channel, q.topic.id
    paths = (
        ("channels", channel),
        ("topics", topic, "enabled"),
        ("topics", topic, "frequency"),
        ("topics", topic, "channels", channel),
    )
    out: dict[str, Any] = {"channels": {}, "topics": {topic: {"channels": {}}}}
    for path in paths:
        best: tuple[str, Any] | None = None
        for row in rows:
            value: Any = row.preferences
            for part in path:
                value = _map(value).get(part, _MISSING)
            if value is _MISSING:
                continue
            stamps = row.stamps if isinstance(row.stamps, dict) else _EMPTY
            stamp = stamps.get("/".join(path)) or f"{row.updated_at}|{row.record_id}"
            if best is None or stamp > best[0]:
                best = (stamp, value)
        if best is not None:
            target = out
            for part in path[:-1]:
                target = target[part]
            target[path[-1]] = best[1]
    return out


def decide(q: Question, rows: Sequence[ContactRow]) -> Answer:
    """The answer for one identity from the rows of its linked subjects."""
    if q.channel not in q.topic.channels:
        return Answer(False, "channel_not_offered")
    if not rows:
        return Answer(False, "unknown_identity")
    preferences, at = _deciding(q, rows)
    if preferences is None:
        return Answer(False, "no_preferences")
    channel = _map(preferences.get("channels")).get(q.channel)
    if channel is not True:
        return Answer(False, "channel_off" if channel is False else "channel_not_chosen", None, at)
    topic = _map(_map(preferences.get("topics")).get(q.topic.id))
    enabled = topic.get("enabled")
    if enabled is not True:
        return Answer(False, "topic_off" if enabled is False else "topic_not_chosen", None, at)
    # A topic may be turned off on one channel only (one-click unsubscribe from its e-mails).
    if _map(topic.get("channels")).get(q.channel) is False:
        return Answer(False, "topic_channel_off", None, at)
    frequency = topic.get("frequency")
    if not isinstance(frequency, str):
        frequency = q.topic.default_frequency
    return Answer(True, "opted_in", frequency, at)


_EMPTY: Mapping[str, Any] = {}
_MISSING = object()


def _map(value: Any) -> Mapping[str, Any]:
    # Stored states are decoded JSON: dict is the only mapping they hold (and an ABC check
    # would cost more than the rest of the decision).
    return value if isinstance(value, dict) else _EMPTY
