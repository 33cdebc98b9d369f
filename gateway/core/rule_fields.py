"""A jurisdiction rule's fields as they are written in TOML: their vocabulary and validation.

``field_problem`` says what is wrong with one field's value (the rule file, a site's overrides);
``build_rule`` turns validated fields into a ``Rule``; region codes are checked here too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, get_args

from gateway.core.model import (
    CONSENT_MODE_TYPES,
    MINOR_PROHIBITED_KINDS,
    PROHIBITED_KINDS,
    SEPARATE_CONSENT_KINDS,
    ConsentModel,
    Rule,
)

MODELS: tuple[str, ...] = get_args(ConsentModel)
_BOOL_FIELDS = (
    "default_granted",
    "gpc",
    "reject_on_first_layer",
    "do_not_sell_link",
    "limit_sensitive_link",
    "gpc_objects",
)
_INT_FIELDS = {
    "age_of_consent": (0, 21),
    "reprompt_months": (1, 120),
    "reprompt_after_refusal_months": (1, 120),
    "minor_age": (0, 21),
}
# List fields whose entries come from a fixed vocabulary.
KIND_FIELDS: Mapping[str, tuple[str, ...]] = {
    "separate_consent": SEPARATE_CONSENT_KINDS,
    "prohibited": PROHIBITED_KINDS,
    "minor_prohibited": MINOR_PROHIBITED_KINDS,
    "opt_in_types": CONSENT_MODE_TYPES,
}
FIELDS: tuple[str, ...] = (
    "model",
    "name",
    *_BOOL_FIELDS,
    *KIND_FIELDS,
    "consent_mode",
    *_INT_FIELDS,
    "exempt_purposes",
    "notice_languages",
)
_LANGUAGE = re.compile(r"[a-z]{2,3}")
# Fields of earlier releases, with what replaced them.
_RENAMED = {
    "reprompt_days": "reprompt_months (calendar months; 13 months = 393 to 397 days)",
    "reprompt_after_refusal_days": "reprompt_after_refusal_months (calendar months)",
}
REGION_CODE = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,3})?")
_CODE_HINTS = {
    "UK": 'the United Kingdom is "GB"',
    "EU": 'list the member states, or use "*"',
    "EEA": 'list the countries, or use "*"',
}


def _problem(value: Any, expected: str) -> str:
    return f"expected {expected}, got {type(value).__name__} {value!r}"


def field_problem(name: str, value: Any, exempt_categories: Mapping[str, Any]) -> str | None:
    """What is wrong with one Rule field value from TOML, or None."""
    if name in _BOOL_FIELDS:
        return None if isinstance(value, bool) else _problem(value, "true or false")
    if name in _INT_FIELDS:
        low, high = _INT_FIELDS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return _problem(value, f"a whole number from {low} to {high}")
        return None
    if name == "model":
        return None if value in MODELS else _problem(value, " or ".join(map(repr, MODELS)))
    if name == "name":
        return None if isinstance(value, str) else _problem(value, "a string")
    if name in KIND_FIELDS:
        kinds = KIND_FIELDS[name]
        if not isinstance(value, list) or any(v not in kinds for v in value):
            return _problem(value, f"a list of {', '.join(map(repr, kinds))}")
        return None
    if name == "exempt_purposes":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            return _problem(
                value,
                f"a list of purpose ids or categories ({', '.join(map(repr, exempt_categories))})",
            )
        return None
    if name == "notice_languages":
        if not isinstance(value, list) or not all(
            isinstance(v, str) and _LANGUAGE.fullmatch(v) for v in value
        ):
            return _problem(value, 'a list of ISO 639 language codes such as "hi"')
        return None
    if name == "consent_mode":
        if not isinstance(value, Mapping):
            return _problem(value, "a table of Consent Mode types")
        for key, state in value.items():
            if key not in CONSENT_MODE_TYPES:
                return f"unknown Consent Mode type {key!r} (known: {', '.join(CONSENT_MODE_TYPES)})"
            if state not in ("granted", "denied"):
                return f"{key}: " + _problem(state, "'granted' or 'denied'")
        return None
    if name in _RENAMED:
        return f"renamed: use {_RENAMED[name]}"
    return f"unknown field (known: rule, {', '.join(FIELDS)})"


def model_consent_mode(model: str) -> dict[str, str]:
    """Consent Mode defaults implied by a model: opt-in denies all but security storage."""
    if model == "opt-in":
        return {t: "granted" if t == "security_storage" else "denied" for t in CONSENT_MODE_TYPES}
    return dict.fromkeys(CONSENT_MODE_TYPES, "granted")


def build_rule(
    rule_id: str, fields: Mapping[str, Any], categories: Mapping[str, tuple[str, ...]]
) -> Rule:
    values = {k: v for k, v in fields.items() if k in FIELDS}
    for name in (*KIND_FIELDS, "exempt_purposes", "notice_languages"):
        values[name] = tuple(values.get(name, ()))
    values["national_ages"] = MappingProxyType(dict(fields.get("national_ages") or {}))
    values["age_of_consent"] = values.get("age_of_consent") or None
    values["consent_mode"] = MappingProxyType(dict(values.get("consent_mode", {})))
    values["exempt_categories"] = MappingProxyType(
        {e: categories[e] for e in values["exempt_purposes"] if e in categories}
    )
    return Rule(id=rule_id, **values)


def key_label(key: object) -> str:
    return f'"{key}"' if isinstance(key, str) else repr(key)


def region_problem(key: object) -> str | None:
    if not isinstance(key, str):
        return "a region code must be a string"
    if key == "*" or REGION_CODE.fullmatch(key):
        return None if key not in _CODE_HINTS else f"not an ISO 3166 code; {_CODE_HINTS[key]}"
    if key.upper() in _CODE_HINTS:
        return f"not an ISO 3166 code; {_CODE_HINTS[key.upper()]}"
    if REGION_CODE.fullmatch(key.strip().upper()):
        return f'write region codes in upper case: "{key.strip().upper()}"'
    return 'malformed region code; use "DE", "US-CA" (ISO 3166-1/-2) or "*" for every region'


def canonical(fields: Mapping[str, Any]) -> str:
    return json.dumps(
        fields, sort_keys=True, default=lambda o: dict(o) if isinstance(o, Mapping) else list(o)
    )
