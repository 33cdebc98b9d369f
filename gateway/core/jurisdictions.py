"""Region (ISO 3166-1/-2) → jurisdiction rule: shipped templates, site overrides, fail closed.

The templates and the region map are data, in ``gateway/core/rules/jurisdictions.toml``, read and
validated by ``load_rules()`` into a ``RuleTable`` where the app (a command, a test) starts, and
passed down from there. Lookup is most specific first (``US-CA``, then ``US``); anything unmapped
or unknown gets the table's ``strictest`` rule. A site's overrides (``[rules."<region>"]`` in its
site.toml) join that map: the template is the one named by the most specific code, the site's
``rule = "…"`` winning over the shipped map at the same code, ``"*"`` standing for every region
nothing maps (so ``[rules."US"] rule = "ccpa"`` covers the states without a rule of their own,
and US-TX keeps ``us-states`` unless ``[rules."US-TX"]`` names another). Field changes then apply
to a code and everything under it, from ``"*"`` to the country to the subdivision. A rule changed
by a field gets a derived id (``gdpr+1a2b3c4d``) so that caches and consent records never mistake
it for the shipped template. ``RuleTable.for_site`` makes a site's ``SiteRules``, which the
catalog attaches to the site's bundle.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import tomllib
from collections.abc import Collection, Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.core.errors import ConfigError
from gateway.core.model import CONSENT_MODE_TYPES, EXEMPTION_CATEGORIES, Region, Rule
from gateway.core.regionmap import Clock, RegionMap
from gateway.core.rule_fields import (
    FIELDS,
    KIND_FIELDS,
    REGION_CODE,
    build_rule,
    canonical,
    field_problem,
    key_label,
    model_consent_mode,
    region_problem,
)


def load_rules(path: Path | None = None, clock: Clock = time.time) -> RuleTable:
    """Read and validate a rule file: the shipped one, or ``path`` in the same format.

    Called where the app, a command or a test starts, never at import; raises ConfigError
    naming the file, template and field. ``clock`` decides which dated regions are in force.
    """
    if path is None:
        where = "gateway/core/rules/jurisdictions.toml"
        resource = resources.files("gateway.core").joinpath("rules", "jurisdictions.toml")
        text = resource.read_text(encoding="utf-8")
    else:
        where, text = str(path), path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", where=where) from exc
    return parse_rules(data, where, clock)


# Template keys that are not Rule fields: its sources, inheritance, and the region map.
_TEMPLATE_KEYS = ("law", "guidance", "extends", "regions", "regions_from", "national_ages")
# What a template that extends another does not inherit: its identity and where it applies.
_NOT_INHERITED = ("name", "law", "guidance", "extends", "regions", "regions_from")


def expand_templates(
    templates: Mapping[str, Mapping[str, Any]], where: str
) -> dict[str, dict[str, Any]]:
    """Each template's fields, those of a template it ``extends`` first (one level deep)."""
    expanded: dict[str, dict[str, Any]] = {}
    for rule_id, fields in templates.items():
        parent_id = fields.get("extends")
        if parent_id is None:
            expanded[rule_id] = dict(fields)
            continue
        parent = templates.get(parent_id) if isinstance(parent_id, str) else None
        if parent is None or "extends" in parent:
            raise ConfigError(
                f"extends {parent_id!r}: not a template that extends no other",
                where=f"{where}: templates.{rule_id}.extends",
            )
        inherited = {k: v for k, v in parent.items() if k not in _NOT_INHERITED}
        expanded[rule_id] = {**inherited, **fields}
    return expanded


def dated_regions(
    rule_id: str, fields: Mapping[str, Any], where: str
) -> list[tuple[dt.date, str, str]]:
    """``regions_from`` of one template as (first day, region code, rule id)."""
    table = fields.get("regions_from", {})
    if not isinstance(table, Mapping):
        raise ConfigError(
            "expected a table of region = date", where=f"{where}: templates.{rule_id}.regions_from"
        )
    found = []
    for code, day in table.items():
        if not isinstance(day, dt.date) or isinstance(day, dt.datetime):
            raise ConfigError(
                f"{code}: expected a date such as 2027-01-01, got {day!r}",
                where=f"{where}: templates.{rule_id}.regions_from",
            )
        found.append((day, code, rule_id))
    return found


def parse_rules(
    data: Mapping[str, Any], where: str = "rules", clock: Clock = time.time
) -> RuleTable:
    """The rule table from a parsed rule file; raises ConfigError naming template and field."""
    categories = {k: tuple(v) for k, v in data["exempt_categories"].items()}
    if not set(categories) <= set(EXEMPTION_CATEGORIES):
        raise ConfigError(f"exempt categories are {', '.join(EXEMPTION_CATEGORIES)}", where=where)
    ages = dict(data["national_age_of_consent"])
    rules: dict[str, Rule] = {}
    regions: dict[str, str] = {}
    sources: dict[str, tuple[str, str]] = {}
    dated: list[tuple[dt.date, str, str]] = []
    for rule_id, fields in expand_templates(data["templates"], where).items():
        for name, value in fields.items():
            problem = None if name in _TEMPLATE_KEYS else field_problem(name, value, categories)
            if problem:
                raise ConfigError(problem, where=f"{where}: templates.{rule_id}.{name}")
        if not set(fields.get("exempt_purposes", [])) <= set(categories):
            raise ConfigError("a template exempts categories only", where=f"{where}: {rule_id}")
        if set(fields.get("consent_mode", {})) != set(CONSENT_MODE_TYPES):
            raise ConfigError("consent_mode must set all 7 types", where=f"{where}: {rule_id}")
        if not fields.get("law") or not fields.get("guidance"):
            raise ConfigError(
                "every template names the law it encodes and the guidance it follows "
                "(law = …, guidance = …)",
                where=f"{where}: templates.{rule_id}",
            )
        national = ages if fields.get("national_ages") is True else {}
        rules[rule_id] = build_rule(rule_id, {**fields, "national_ages": national}, categories)
        sources[rule_id] = (fields["law"], fields["guidance"])
        dated += dated_regions(rule_id, fields, where)
        for code in [*fields.get("regions", []), *fields.get("regions_from", {})]:
            if code in regions or not REGION_CODE.fullmatch(code):
                raise ConfigError(f"region {code!r} is malformed or mapped twice", where=where)
            regions[code] = rule_id
    strictest = data["strictest"]
    if strictest not in rules:
        raise ConfigError(f"strictest rule {strictest!r} is not a template", where=where)
    for _, code, _ in dated:
        del regions[code]  # it joins its rule on its date (RegionMap)
    return RuleTable(rules, regions, strictest, categories, sources, ages, dated, clock)


class RuleTable:
    """The shipped templates and region map, validated: what ``load_rules`` returns.

    Built once at start-up and passed down (the catalog gives each site bundle its
    ``SiteRules``); its rules never change, so one table serves every thread and every reload.
    Only the region map moves, on the days listed in ``dated`` (``regions_from``).
    """

    __slots__ = (
        "dated",
        "exempt_categories",
        "national_age_of_consent",
        "region_map",
        "regions",
        "rules",
        "sources",
        "strictest",
        "strictest_id",
    )

    def __init__(
        self,
        rules: Mapping[str, Rule],
        regions: Mapping[str, str],
        strictest_id: str,
        exempt_categories: Mapping[str, tuple[str, ...]],
        sources: Mapping[str, tuple[str, str]],
        national_age_of_consent: Mapping[str, int],
        dated: Sequence[tuple[dt.date, str, str]] = (),
        clock: Clock = time.time,
    ) -> None:
        self.rules: Mapping[str, Rule] = MappingProxyType(dict(rules))
        # Region code → rule id, for the regions mapped without a date.
        self.regions: Mapping[str, str] = MappingProxyType(dict(regions))
        # (first day, region code, rule id) of the regions that join a rule on a date.
        self.dated: tuple[tuple[dt.date, str, str], ...] = tuple(sorted(dated))
        self.strictest_id = strictest_id
        self.strictest = self.rules[strictest_id]
        # UK-style exemption categories → the Consent Mode types a purpose may map to fall in them.
        self.exempt_categories: Mapping[str, tuple[str, ...]] = MappingProxyType(
            dict(exempt_categories)
        )
        # Rule id → (the law it encodes, the guidance it follows), for the README and proofs.
        self.sources: Mapping[str, tuple[str, str]] = MappingProxyType(dict(sources))
        # GDPR Art. 8 national ages by country; templates with national_ages serve them.
        self.national_age_of_consent: Mapping[str, int] = MappingProxyType(
            dict(national_age_of_consent)
        )
        # Hot-path tables as of the clock's today: country → rule, country → {sub → rule}.
        self.region_map = RegionMap(self.rules, self.regions, self.dated, clock)

    def rule_for(self, region: Region) -> Rule:
        """The shipped rule for a visitor's region; unknown fails closed. A site's overrides
        are resolved by its ``SiteRules`` (``for_site``)."""
        return self._base_rule(region.country, region.subdivision)

    def _base_rule(self, country: str | None, sub: str | None) -> Rule:
        if not country:
            return self.strictest
        region_map = self.region_map
        region_map.refresh()  # one clock read: a dated region may have joined its rule today
        subs = region_map.by_subdivision.get(country)
        if subs is not None and sub:
            rule = subs.get(sub) or subs.get(sub.strip().upper())
            if rule is not None:
                return rule
        rule = region_map.by_country.get(country)
        if rule is not None:
            return rule
        # Slow path only for codes that are not already clean upper case.
        clean = country.strip().upper()
        if clean != country:
            return self._base_rule(clean, sub.strip().upper() if sub else sub)
        return self.strictest

    def for_site(self, overrides: Mapping[str, Mapping[str, Any]]) -> SiteRules:
        """One site's resolver; raises ConfigError if the overrides are invalid."""
        return SiteRules(self, overrides)

    def _override_problems(
        self, label: str, override: Any, purpose_ids: Collection[str] | None = None
    ) -> list[str]:
        if not isinstance(override, Mapping):
            return [f'{label}: expected a table of rule fields, e.g. rule = "gdpr" or gpc = true']
        categories = self.exempt_categories
        problems = []
        for name, value in override.items():
            if name == "rule":
                if value not in self.rules:
                    problems.append(
                        f"{label}.rule: unknown template {value!r} "
                        f"(hint: one of {', '.join(self.rules)})"
                    )
            elif name == "id":
                problems.append(
                    f'{label}.id: cannot be set (hint: use rule = "<template>" to pick '
                    "another template; a changed rule gets a derived id)"
                )
            else:
                problem = field_problem(name, value, categories)
                if problem:
                    problems.append(f"{label}.{name}: {problem}")
                elif name == "exempt_purposes" and purpose_ids is not None:
                    unknown = [v for v in value if v not in categories and v not in purpose_ids]
                    if unknown:
                        problems.append(
                            f"{label}.exempt_purposes: unknown {unknown} (hint: a purpose "
                            f"id of this site or one of {', '.join(categories)})"
                        )
        if override.get("model") == "opt-in" and override.get("default_granted") is True:
            problems.append(
                f"{label}: model 'opt-in' cannot have default_granted = true "
                "(hint: opt-in means nothing optional is on before a choice)"
            )
        return problems

    def validate_overrides(
        self, overrides: Any, purpose_ids: Collection[str] | None = None
    ) -> list[str]:
        """Every problem in a site's rule overrides, each naming the region key and field.

        Given the site's ``purpose_ids``, ``exempt_purposes`` entries are checked against them too.
        """
        if not overrides:
            return []
        if not isinstance(overrides, Mapping):
            return ['expected tables keyed by region, e.g. [rules."US-CA"] rule = "ccpa"']
        problems = []
        for key, override in overrides.items():
            label = key_label(key)
            problem_of_region = region_problem(key)
            if problem_of_region:
                problems.append(f"{label}: {problem_of_region}")
            problems.extend(self._override_problems(label, override, purpose_ids))
        return problems

    def derive(self, base: Rule, fields: Mapping[str, Any]) -> Rule:
        """``base`` with changed fields, under a derived id (``gdpr+1a2b3c4d``)."""
        changes = {k: v for k, v in fields.items() if k != "consent_mode"}
        consent_mode = dict(base.consent_mode)
        if "model" in fields and fields["model"] != base.model:
            # A new model brings its own defaults unless the override states them.
            changes.setdefault("default_granted", fields["model"] != "opt-in")
            consent_mode = model_consent_mode(fields["model"])
        consent_mode.update(fields.get("consent_mode", {}))
        merged = {**{f: getattr(base, f) for f in FIELDS}, **changes, "consent_mode": consent_mode}
        for name in (*KIND_FIELDS, "exempt_purposes", "notice_languages"):
            merged[name] = list(merged[name])
        # What the law bans outright a site may add to, never lift (Md. Com. Law 14-4607(a),
        # ORS 646A.578, DPDP s. 9(3), …): the template's bans stay in every derived rule.
        for name in ("prohibited", "minor_prohibited"):
            merged[name] = [
                *getattr(base, name),
                *(k for k in merged[name] if k not in getattr(base, name)),
            ]
        merged["minor_age"] = max(merged["minor_age"], base.minor_age)
        merged["age_of_consent"] = merged["age_of_consent"] or 0
        # A site that states its own age of consent means it wherever the override applies.
        merged["national_ages"] = {} if "age_of_consent" in fields else base.national_ages
        digest = hashlib.sha256(canonical(fields).encode()).hexdigest()[:8]
        return build_rule(f"{base.id}+{digest}", merged, self.exempt_categories)

    def apply_override(self, rule: Rule, override: Mapping[str, Any]) -> Rule:
        """The rule with one override applied; ``rule = "<template>"`` in it swaps the base."""
        problems = self._override_problems("override", override)
        if problems:
            raise ConfigError(problems[0], hint="run consent-gateway check")
        base = self.rules[override["rule"]] if "rule" in override else rule
        fields = {k: v for k, v in override.items() if k != "rule"}
        return self.derive(base, fields) if fields else base

    def age_of_consent(self, region: Region, rule: Rule) -> int | None:
        """The age below which a guardian must consent: the national figure where the rule
        carries one (GDPR Art. 8(1); also outermost regions, Åland and site-derived rules)."""
        return rule.age_for(region.country)


class SiteRules:
    """One site's rules: the table with the site's overrides, resolved lazily per region and
    memoised (stable Rule objects). The catalog attaches one to each site bundle, so a reload
    (a new bundle) starts afresh and nothing outlives the bundle."""

    __slots__ = ("_by_content", "_by_region", "_epoch", "overrides", "table")

    def __init__(self, table: RuleTable, overrides: Mapping[str, Mapping[str, Any]]) -> None:
        problems = table.validate_overrides(overrides)
        if problems:
            raise ConfigError(problems[0], where="rules", hint="run consent-gateway check")
        self.table = table
        self.overrides = overrides
        self._by_region: dict[tuple[str | None, str | None], Rule] = {}
        self._by_content: dict[str, Rule] = {}
        self._epoch = table.region_map.epoch

    def rule(self, region: Region) -> Rule:
        """The rule for a visitor's region, with the site's overrides; unknown fails closed."""
        if not self.overrides:
            return self.table._base_rule(region.country, region.subdivision)
        region_map = self.table.region_map
        region_map.refresh()
        if self._epoch != region_map.epoch:  # a dated region joined its rule: forget the old
            self._by_region.clear()
            self._epoch = region_map.epoch
        key = (region.country, region.subdivision)
        rule = self._by_region.get(key)
        if rule is None:
            rule = self._resolve(*key)
            if len(self._by_region) > 4096:  # bounded: garbage codes must not grow it forever
                self._by_region.clear()
            self._by_region[key] = rule
        return rule

    def _template(self, codes: list[str]) -> Rule:
        """The most specific code that names a template, the site's before the shipped map's."""
        table = self.table
        region_map = table.region_map
        for code in reversed(codes):
            rule_id = self.overrides.get(code, {}).get("rule")
            if rule_id:
                return table.rules[rule_id]
            country, _, sub = code.partition("-")
            shipped = (
                region_map.by_subdivision.get(country, {}).get(sub)
                if sub
                else region_map.by_country.get(country)
            )
            if shipped is not None:
                return shipped
        return table.strictest

    def _resolve(self, country: str | None, sub: str | None) -> Rule:
        country = country.strip().upper() if country else None
        sub = sub.strip().upper() if sub else None
        codes = ["*"]
        if country:
            codes.append(country)
            if sub:
                codes.append(f"{country}-{sub}")
        layers = [self.overrides[c] for c in codes if c in self.overrides]
        base = self._template(codes)
        fields: dict[str, Any] = {}
        for layer in layers:
            for name, value in layer.items():
                if name == "consent_mode":
                    fields["consent_mode"] = {**fields.get("consent_mode", {}), **value}
                elif name != "rule":
                    fields[name] = value
        if not fields:
            return base
        content = f"{base.id} {canonical(fields)}"
        rule = self._by_content.get(content)
        if rule is None:
            rule = self._by_content[content] = self.table.derive(base, fields)
        return rule
