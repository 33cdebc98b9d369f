"""The texts TCF requires on the first layer, as gettext msgids of the site's catalog.

IAB Europe's Policies (v2.2+) make the first layer name the purposes (or the stacks that group
them) and special features, say how many vendors the site works with, that some rely on
legitimate interest, and that the visitor may object. The purpose, special feature and stack
names and descriptions come from the Global Vendor List in English; translators translate them
in the site's .po files like any other banner text (``consent-gateway i18n extract`` adds them),
and ``consent-gateway check`` names each locale that lacks one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, NamedTuple

from gateway.core.iab import TcfSettings
from gateway.standards.gvl import GlobalVendorList, Text

# Key → msgid. %(count)s is the number of vendors the site discloses.
FIRST_LAYER: dict[str, str] = {
    "title": "We and our partners value your privacy",
    "intro": (
        "We and our %(count)s partners store and/or access information on a device, such as "
        "cookies, and process personal data, such as unique identifiers and standard information "
        "sent by a device, for the purposes below. You may accept, reject or set your choices."
    ),
    "legitimate_interest": (
        "Some partners process your data on the basis of their legitimate interest rather than "
        "your consent. You have the right to object to this at any time: refuse the purpose in "
        "the settings."
    ),
    "purposes": "Purposes",
    "special_features": "Special features",
    "vendors": "Our %(count)s partners",
    "consent": "Consent",
    "legitimate_interest_short": "Legitimate interest",
    "privacy_policy": "Privacy policy",
}

Kind = Literal["stack", "purpose", "special_feature"]


class Item(NamedTuple):
    """One line of the first layer: a stack, or a purpose or special feature no stack covers."""

    kind: Kind
    text: Text


def declared(settings: TcfSettings) -> tuple[set[int], set[int]]:
    """The TCF purposes the site declares (any basis) and its special features."""
    purposes = {i for ids in settings.consent.values() for i in ids}
    purposes |= {i for ids in settings.legitimate_interest.values() for i in ids}
    features = {i for ids in settings.special_features.values() for i in ids}
    return purposes, features


def first_layer(settings: TcfSettings, gvl: GlobalVendorList) -> list[Item]:
    """Stacks that cover only what the site declares, biggest first, without overlap; then the
    purposes and special features left over (TCF Policies: stacks may replace purposes)."""
    purposes, features = declared(settings)
    left_p, left_f = set(purposes), set(features)
    items: list[Item] = []
    for stack in sorted(
        gvl.stacks.values(), key=lambda s: (-len(s.purposes) - len(s.special_features), s.id)
    ):
        p, f = set(stack.purposes), set(stack.special_features)
        if (p or f) and p <= left_p and f <= left_f:
            items.append(Item("stack", stack))
            left_p -= p
            left_f -= f
    items += [Item("purpose", gvl.purposes[i]) for i in sorted(left_p) if i in gvl.purposes]
    items += [
        Item("special_feature", gvl.special_features[i])
        for i in sorted(left_f)
        if i in gvl.special_features
    ]
    return items


def messages(settings: TcfSettings, gvl: GlobalVendorList) -> Iterator[tuple[str, str]]:
    """(msgid, translator comment) of every text the site's TCF first layer and panel show."""
    for key, msgid in FIRST_LAYER.items():
        yield msgid, f"TCF first layer: {key}"
    purposes, features = declared(settings)
    for item in first_layer(settings, gvl):
        if item.kind == "stack":
            yield item.text.name, f"TCF stack {item.text.id}: name"
            yield item.text.description, f"TCF stack {item.text.id}: description"
    for i in sorted(purposes):
        if i in gvl.purposes:
            yield gvl.purposes[i].name, f"TCF purpose {i}: name"
            yield gvl.purposes[i].description, f"TCF purpose {i}: description"
    for i in sorted(features):
        if i in gvl.special_features:
            yield gvl.special_features[i].name, f"TCF special feature {i}: name"
            yield gvl.special_features[i].description, f"TCF special feature {i}: description"
