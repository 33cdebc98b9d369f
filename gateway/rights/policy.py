"""Which request types a region's rule offers and its response deadlines; downstream systems.

Parsing is pure; ``load_policies`` reads the shipped table (gateway/core/rules/rights.toml).
A site's ``[rights]`` table in site.toml overrides templates and declares downstream systems:

    [rights.templates.gdpr]
    deadline = "20 days"
    [[rights.systems]]
    name = "crm"
    secret_env = "CRM_RIGHTS_SECRET"   # the HMAC secret is read from this environment variable
    required = true
    remind_after = "7 days"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.errors import ConfigError
from gateway.rights.deadlines import Period, parse_period
from gateway.rights.kinds import TYPES

RULES_FILE = Path(__file__).resolve().parent.parent / "core" / "rules" / "rights.toml"
SYSTEM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_TEMPLATE_KEYS = {"law", "types", "deadline", "extension"}
_TYPE_KEYS = {"deadline", "extension"}
_SYSTEM_KEYS = {"name", "secret_env", "required", "remind_after"}
DEFAULT_REMIND = Period(7, "days")


@dataclass(frozen=True)
class Deadline:
    period: Period
    extension: Period


@dataclass(frozen=True)
class RightsPolicy:
    """One jurisdiction template's rights: offered types, deadline and extension per type."""

    template: str
    law: str
    types: tuple[str, ...]
    deadline: Deadline
    per_type: Mapping[str, Deadline] = field(default_factory=dict)

    def deadline_for(self, request_type: str) -> Deadline:
        return self.per_type.get(request_type, self.deadline)

    def as_json(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "law": self.law,
            "types": list(self.types),
            "deadline": str(self.deadline.period),
            "extension": str(self.deadline.extension),
            "per_type": {
                t: {"deadline": str(d.period), "extension": str(d.extension)}
                for t, d in self.per_type.items()
            },
        }


@dataclass(frozen=True)
class DownstreamSystem:
    """A system (CRM, CDP, …) that must confirm its part of each request with a signed call."""

    name: str
    secret_env: str
    required: bool = True
    remind_after: Period = DEFAULT_REMIND


@dataclass(frozen=True)
class SiteRights:
    """What one site uses: its policies per template id and its downstream systems."""

    policies: Mapping[str, RightsPolicy]
    systems: tuple[DownstreamSystem, ...] = ()

    def policy(self, template: str) -> RightsPolicy:
        # A site's derived rule ("gdpr+1a2b3c4d") keeps its template's rights; a rule id
        # unknown to the rights table gets the fail-closed default.
        return self.policies.get(template.partition("+")[0]) or self.policies["default"]

    def system(self, name: str) -> DownstreamSystem | None:
        return next((s for s in self.systems if s.name == name), None)


def _period(where: str, value: Any) -> Period:
    try:
        return parse_period(value)
    except ValueError as exc:
        raise ConfigError(str(exc), where=where) from exc


def _check_keys(where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed and key not in TYPES:
            raise ConfigError(
                f"unknown key {key!r}", where=where, hint=f"allowed: {', '.join(sorted(allowed))}"
            )


def _template(where: str, name: str, table: Any, base: RightsPolicy | None) -> RightsPolicy:
    if not isinstance(table, dict):
        raise ConfigError("expected a table", where=where)
    _check_keys(where, table, _TEMPLATE_KEYS)
    if base is None:
        for key in ("types", "deadline", "extension"):
            if key not in table:
                raise ConfigError(f"missing {key!r}", where=where)
    types = table.get("types", base.types if base else ())
    if not isinstance(types, list | tuple) or not all(t in TYPES for t in types):
        raise ConfigError("types must be a list of request types", where=where,
                          hint=", ".join(TYPES))  # fmt: skip
    law = table.get("law", base.law if base else "")
    if not isinstance(law, str):
        raise ConfigError("law must be a string", where=where)
    deadline = Deadline(
        _period(f"{where}.deadline", table["deadline"]) if "deadline" in table
        else base.deadline.period if base else Period(30, "days"),
        _period(f"{where}.extension", table["extension"]) if "extension" in table
        else base.deadline.extension if base else Period(0, "days"),
    )  # fmt: skip
    per_type = dict(base.per_type) if base else {}
    for type_ in TYPES:
        if type_ in table:
            sub = table[type_]
            if not isinstance(sub, dict):
                raise ConfigError("expected a table", where=f"{where}.{type_}")
            _check_keys(f"{where}.{type_}", sub, _TYPE_KEYS)
            old = per_type.get(type_, deadline)
            per_type[type_] = Deadline(
                _period(f"{where}.{type_}.deadline", sub["deadline"]) if "deadline" in sub
                else old.period,
                _period(f"{where}.{type_}.extension", sub["extension"]) if "extension" in sub
                else old.extension,
            )  # fmt: skip
    policy = RightsPolicy(name, law, tuple(dict.fromkeys(types)), deadline, per_type)
    return policy


def parse_policies(data: Mapping[str, Any], where: str = "rights.toml") -> dict[str, RightsPolicy]:
    templates = data.get("templates")
    if not isinstance(templates, dict) or "default" not in templates:
        raise ConfigError("needs [templates.default] (the fail-closed policy)", where=where)
    return {
        name: _template(f"{where}: templates.{name}", name, table, None)
        for name, table in templates.items()
    }


def load_policies(path: Path | None = None) -> dict[str, RightsPolicy]:
    path = path or RULES_FILE
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the rights table: {exc}", where=str(path)) from exc
    return parse_policies(data, str(path))


def site_rights(
    base: Mapping[str, RightsPolicy], table: Mapping[str, Any], where: str = "site.toml [rights]"
) -> SiteRights:
    """The shipped policies with a site's ``[rights]`` overrides and downstream systems."""
    if not isinstance(table, Mapping):
        raise ConfigError("[rights] must be a table", where=where)
    for key in table:
        if key not in ("templates", "systems"):
            raise ConfigError(f"unknown key {key!r}", where=where, hint="templates, systems")
    policies = dict(base)
    overrides = table.get("templates", {})
    if not isinstance(overrides, dict):
        raise ConfigError("templates must be a table", where=where)
    for name, sub in overrides.items():
        policies[name] = _template(f"{where}.templates.{name}", name, sub, policies.get(name))
    systems_raw = table.get("systems", [])
    if not isinstance(systems_raw, list):
        raise ConfigError("systems must be an array of tables ([[rights.systems]])", where=where)
    systems: list[DownstreamSystem] = []
    for index, raw in enumerate(systems_raw):
        at = f"{where}.systems[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError("expected a table", where=at)
        for key in raw:
            if key not in _SYSTEM_KEYS:
                raise ConfigError(f"unknown key {key!r}", where=at,
                                  hint=", ".join(sorted(_SYSTEM_KEYS)))  # fmt: skip
        name, secret_env = raw.get("name"), raw.get("secret_env")
        if not isinstance(name, str) or not SYSTEM_NAME.match(name):
            raise ConfigError("name: 1-40 of a-z 0-9 _ -", where=at)
        if not isinstance(secret_env, str) or not secret_env or secret_env.startswith("GATEWAY_"):
            raise ConfigError(
                "secret_env: the environment variable holding the system's HMAC secret",
                where=at, hint="not a GATEWAY_* name (those are settings)",
            )  # fmt: skip
        required = raw.get("required", True)
        if not isinstance(required, bool):
            raise ConfigError("required must be true or false", where=at)
        remind = _period(f"{at}.remind_after", raw.get("remind_after", "7 days"))
        if any(s.name == name for s in systems):
            raise ConfigError(f"duplicate system {name!r}", where=at)
        systems.append(DownstreamSystem(name, secret_env, required, remind))
    return SiteRights(policies, tuple(systems))


def rights_table_markdown(policies: Mapping[str, RightsPolicy]) -> str:
    """The README's deadline table (tests/test_rights_rules.py keeps the README equal to it)."""
    rows = [
        "| rule | request types | answer within | extension | per type | law |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in policies.items():
        per_type = "; ".join(
            f"{t}: {d.period}" + (f" (+{d.extension})" if not d.extension.is_zero else "")
            for t, d in p.per_type.items()
        )
        extension = "none" if p.deadline.extension.is_zero else str(p.deadline.extension)
        rows.append(
            f"| `{name}` | {', '.join(p.types)} | {p.deadline.period} | {extension} | "
            f"{per_type} | {p.law} |"
        )
    return "\n".join(rows)
