"""A site's preference model: contact channels, topics, frequencies, product lines, identities.

Names and descriptions are gettext msgids, like purposes'. Topics are off until the subject
turns them on: marketing by e-mail, SMS or push needs an opt-in in most of the world.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

# Identity types every site may link subjects to; a site adds its own in `identity_types`.
BUILTIN_IDENTITY_TYPES: tuple[str, ...] = (
    "email",
    "phone",
    "customer_id",
    "wechat_openid",
    "wechat_unionid",
)


@dataclass(frozen=True)
class ContactChannel:
    """A way to reach a customer (e-mail, SMS, push, WeChat, post, …)."""

    id: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class Frequency:
    """How often a topic may be sent (daily, weekly, …): offered per topic."""

    id: str
    name: str


@dataclass(frozen=True)
class Topic:
    """Something a customer may be contacted about, on some channels, at some frequency."""

    id: str
    name: str
    description: str
    channels: tuple[str, ...]
    frequencies: tuple[str, ...] = ()  # empty: no choice of frequency (sent as it happens)
    default_frequency: str | None = None  # when turned on without naming one
    product_lines: tuple[str, ...] = ()  # empty: every product line


@dataclass(frozen=True)
class ProductLine:
    """A part of the business a customer may decide about separately (shop, insurance, …)."""

    id: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class PreferenceModel:
    """Everything ``site.toml`` declares about preferences; empty for a cookie-only site."""

    channels: tuple[ContactChannel, ...] = ()
    frequencies: tuple[Frequency, ...] = ()
    topics: tuple[Topic, ...] = ()
    product_lines: tuple[ProductLine, ...] = ()
    identity_types: tuple[str, ...] = ()  # the site's own types, besides the built-in ones

    def channel(self, channel_id: str) -> ContactChannel | None:
        return self._index[0].get(channel_id)

    def topic(self, topic_id: str) -> Topic | None:
        return self._index[1].get(topic_id)

    def product_line(self, line_id: str) -> ProductLine | None:
        return self._index[2].get(line_id)

    @functools.cached_property
    def _index(
        self,
    ) -> tuple[dict[str, ContactChannel], dict[str, Topic], dict[str, ProductLine]]:
        return (
            {c.id: c for c in self.channels},
            {t.id: t for t in self.topics},
            {p.id: p for p in self.product_lines},
        )

    @property
    def all_identity_types(self) -> tuple[str, ...]:
        return (*BUILTIN_IDENTITY_TYPES, *self.identity_types)

    def messages(self) -> Iterator[tuple[str, str]]:
        """(msgid, translator comment) of every translatable string, in file order."""
        for c in self.channels:
            yield c.name, f"channel {c.id}: name"
            if c.description:
                yield c.description, f"channel {c.id}: description"
        for f in self.frequencies:
            yield f.name, f"frequency {f.id}: name"
        for t in self.topics:
            yield t.name, f"topic {t.id}: name"
            yield t.description, f"topic {t.id}: description"
        for p in self.product_lines:
            yield p.name, f"product line {p.id}: name"
            if p.description:
                yield p.description, f"product line {p.id}: description"
