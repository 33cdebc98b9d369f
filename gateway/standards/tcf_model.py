"""The TCF v2.3 TC string as values, with the JSON names of IAB's ``TCModel`` (iabtcf).

Id sets (purposes, vendors, special features) are sorted tuples of ids; publisher
restrictions are ``{purposeId, restrictionType, vendorIds}``; ``segments`` lists the
segments in string order with iabtcf's segment names.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.standards.errors import InvalidModel

CORE, DISCLOSED, ALLOWED, PUBLISHER = "core", "vendorsDisclosed", "vendorsAllowed", "publisherTC"
SEGMENT_TYPES = {DISCLOSED: 1, ALLOWED: 2, PUBLISHER: 3}
DEFAULT_SEGMENTS = (CORE, DISCLOSED, PUBLISHER)
"""What @iabtechlabtcf/core writes for a service-specific string (all of them, in v2.3)."""

NO_LI_PURPOSES = frozenset({1, 3, 4, 5, 6})
"""Purposes that may not rest on legitimate interest: 3-6 since TCF v2.2 (the specification
requires their bits to be 0), and 1, which the Policies make consent-only (iabtcf clears it)."""

_UTC = datetime.UTC
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)
_LETTERS = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True)
class PurposeRestriction:
    purpose_id: int
    restriction_type: int  # 0 not allowed, 1 require consent, 2 require legitimate interest
    vendor_ids: tuple[int, ...]


@dataclass(frozen=True)
class TCModel:
    """Every field of a TC string; ``created``/``last_updated`` are deciseconds since 1970."""

    cmp_id: int
    cmp_version: int
    vendor_list_version: int
    created: int
    last_updated: int
    consent_screen: int = 0
    consent_language: str = "EN"
    policy_version: int = 5
    is_service_specific: bool = True
    use_non_standard_texts: bool = False
    purpose_one_treatment: bool = False
    publisher_country_code: str = "AA"
    special_feature_optins: tuple[int, ...] = ()
    purpose_consents: tuple[int, ...] = ()
    purpose_legitimate_interests: tuple[int, ...] = ()
    vendor_consents: tuple[int, ...] = ()
    vendor_legitimate_interests: tuple[int, ...] = ()
    publisher_restrictions: tuple[PurposeRestriction, ...] = ()
    vendors_disclosed: tuple[int, ...] = ()
    vendors_allowed: tuple[int, ...] = ()
    publisher_consents: tuple[int, ...] = ()
    publisher_legitimate_interests: tuple[int, ...] = ()
    num_custom_purposes: int = 0
    publisher_custom_consents: tuple[int, ...] = ()
    publisher_custom_legitimate_interests: tuple[int, ...] = ()
    segments: tuple[str, ...] = field(default=DEFAULT_SEGMENTS)
    version: int = 2


# (JSON name, attribute, kind); kinds: int bits, bool, lang, ids max, date, restrictions
_FIELDS: tuple[tuple[str, str, str, int], ...] = (
    ("version", "version", "int", 6),
    ("created", "created", "date", 36),
    ("lastUpdated", "last_updated", "date", 36),
    ("cmpId", "cmp_id", "int", 12),
    ("cmpVersion", "cmp_version", "int", 12),
    ("consentScreen", "consent_screen", "int", 6),
    ("consentLanguage", "consent_language", "letters", 2),
    ("vendorListVersion", "vendor_list_version", "int", 12),
    ("policyVersion", "policy_version", "int", 6),
    ("isServiceSpecific", "is_service_specific", "bool", 1),
    ("useNonStandardTexts", "use_non_standard_texts", "bool", 1),
    ("specialFeatureOptins", "special_feature_optins", "ids", 12),
    ("purposeConsents", "purpose_consents", "ids", 24),
    ("purposeLegitimateInterests", "purpose_legitimate_interests", "ids", 24),
    ("purposeOneTreatment", "purpose_one_treatment", "bool", 1),
    ("publisherCountryCode", "publisher_country_code", "letters", 2),
    ("vendorConsents", "vendor_consents", "ids", 0xFFFF),
    ("vendorLegitimateInterests", "vendor_legitimate_interests", "ids", 0xFFFF),
    ("publisherRestrictions", "publisher_restrictions", "restrictions", 0),
    ("vendorsDisclosed", "vendors_disclosed", "ids", 0xFFFF),
    ("vendorsAllowed", "vendors_allowed", "ids", 0xFFFF),
    ("publisherConsents", "publisher_consents", "ids", 24),
    ("publisherLegitimateInterests", "publisher_legitimate_interests", "ids", 24),
    ("numCustomPurposes", "num_custom_purposes", "int", 6),
    ("publisherCustomConsents", "publisher_custom_consents", "ids", 63),
    ("publisherCustomLegitimateInterests", "publisher_custom_legitimate_interests", "ids", 63),
    ("segments", "segments", "segments", 0),
)
REQUIRED = ("cmpId", "cmpVersion", "vendorListVersion", "created", "lastUpdated")


def iso(deciseconds: int) -> str:
    """A decisecond timestamp as JavaScript's ``Date.toISOString()`` prints it."""
    moment = _EPOCH + datetime.timedelta(milliseconds=deciseconds * 100)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _deciseconds(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidModel("tc", name, "expected an ISO 8601 date-time or deciseconds")
    if isinstance(value, int):
        return value
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidModel("tc", name, f"{value!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_UTC)
    millis = (moment - _EPOCH) // datetime.timedelta(milliseconds=1)
    return (millis + 50) // 100  # JavaScript's Math.round(ms / 100) for dates after 1970


def to_json(model: TCModel) -> dict[str, Any]:
    """The model as JSON-ready values under iabtcf ``TCModel`` names."""
    out: dict[str, Any] = {}
    for name, attr, kind, _ in _FIELDS:
        value = getattr(model, attr)
        if kind == "date":
            out[name] = iso(value)
        elif kind == "restrictions":
            out[name] = [
                {
                    "purposeId": r.purpose_id,
                    "restrictionType": r.restriction_type,
                    "vendorIds": list(r.vendor_ids),
                }
                for r in value
            ]
        elif kind in ("ids", "segments"):
            out[name] = list(value)
        else:
            out[name] = value
    return out


def _int(name: str, value: Any, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidModel("tc", name, "expected a whole number")
    if not 0 <= value < 1 << bits:
        raise InvalidModel("tc", name, f"{value} does not fit {bits} bits (0..{(1 << bits) - 1})")
    return value


def _ids(name: str, value: Any, max_id: int) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise InvalidModel("tc", name, "expected a list of ids")
    ids = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= max_id:
            raise InvalidModel("tc", name, f"{item!r} is not an id in 1..{max_id}")
        ids.add(item)
    return tuple(sorted(ids))


def _restrictions(name: str, value: Any) -> tuple[PurposeRestriction, ...]:
    if not isinstance(value, list):
        raise InvalidModel("tc", name, "expected a list of {purposeId, restrictionType, vendorIds}")
    out = []
    for n, item in enumerate(value):
        where = f"{name}[{n}]"
        if not isinstance(item, dict) or set(item) != {"purposeId", "restrictionType", "vendorIds"}:
            raise InvalidModel("tc", where, "expected {purposeId, restrictionType, vendorIds}")
        purpose = _int(f"{where}.purposeId", item["purposeId"], 6)
        kind = _int(f"{where}.restrictionType", item["restrictionType"], 2)
        if kind == 3:
            raise InvalidModel("tc", f"{where}.restrictionType", "3 is undefined (0, 1 or 2)")
        out.append(
            PurposeRestriction(purpose, kind, _ids(f"{where}.vendorIds", item["vendorIds"], 0xFFFF))
        )
    return tuple(out)


def _segments(name: str, value: Any) -> tuple[str, ...]:
    known = (CORE, *SEGMENT_TYPES)
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise InvalidModel("tc", name, f"expected a list of segment names ({', '.join(known)})")
    if not value or value[0] != CORE or len(set(value)) != len(value):
        raise InvalidModel("tc", name, "must start with 'core' and name each segment once")
    for segment in value:
        if segment not in known:
            raise InvalidModel("tc", name, f"unknown segment {segment!r} ({', '.join(known)})")
    return tuple(value)


def from_json(data: Any) -> TCModel:
    """A model from iabtcf-named JSON; missing optional fields take iabtcf's defaults."""
    if not isinstance(data, Mapping):
        raise InvalidModel("tc", "(top level)", "expected a JSON object of TCModel fields")
    names = {name for name, *_ in _FIELDS}
    for key in data:
        if key not in names:
            raise InvalidModel("tc", str(key), "not a TCModel field")
    for key in REQUIRED:
        if key not in data:
            raise InvalidModel("tc", key, "is required")
    values: dict[str, Any] = {}
    for name, attr, kind, size in _FIELDS:
        if name not in data:
            continue
        raw = data[name]
        if kind == "int":
            values[attr] = _int(name, raw, size)
        elif kind == "date":
            values[attr] = _int(name, _deciseconds(name, raw), 36)
        elif kind == "bool":
            if not isinstance(raw, bool):
                raise InvalidModel("tc", name, "expected true or false")
            values[attr] = raw
        elif kind == "letters":
            if not isinstance(raw, str) or not _LETTERS.fullmatch(raw.upper()):
                raise InvalidModel("tc", name, "expected two letters A-Z")
            values[attr] = raw.upper()
        elif kind == "ids":
            values[attr] = _ids(name, raw, size)
        elif kind == "restrictions":
            values[attr] = _restrictions(name, raw)
        else:
            values[attr] = _segments(name, raw)
    model = TCModel(**values)
    if model.num_custom_purposes < max(
        (*model.publisher_custom_consents, *model.publisher_custom_legitimate_interests, 0)
    ):
        raise InvalidModel("tc", "numCustomPurposes", "is smaller than a custom purpose id used")
    return model


def conformance_problem(model: TCModel) -> tuple[str, str] | None:
    """The first TCF v2.3 rule the model breaks, as ``(field, detail)``, or None."""
    if model.version != 2:
        return "version", f"is {model.version}; only version 2 strings are supported"
    if model.cmp_id < 2:
        return "cmpId", f"is {model.cmp_id}; IAB Europe assigns CMP ids from 2 up"
    if not model.is_service_specific:
        return "isServiceSpecific", "must be true (a TC string with 0 is invalid)"
    if DISCLOSED not in model.segments:
        return "segments", "the vendorsDisclosed segment is mandatory since TCF v2.3"
    if model.vendors_allowed and ALLOWED not in model.segments:
        return "vendorsAllowed", "is set but the vendorsAllowed segment is not in segments"
    publisher = (
        model.publisher_consents,
        model.publisher_legitimate_interests,
        model.num_custom_purposes,
    )
    if any(publisher) and PUBLISHER not in model.segments:
        return "publisherConsents", "publisher fields are set but publisherTC is not in segments"
    banned = NO_LI_PURPOSES.intersection(model.purpose_legitimate_interests)
    if banned:
        return (
            "purposeLegitimateInterests",
            f"purposes {sorted(banned)} may not rest on legitimate interest",
        )
    return None
