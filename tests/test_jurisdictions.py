"""Region → rule lookup, the shipped templates, site overrides and the generated rule table."""

from __future__ import annotations

import datetime as dt
import re
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.core import jurisdictions as j
from gateway.core import purposes, rule_docs
from gateway.core.errors import ConfigError
from gateway.core.model import (
    CONSENT_MODE_TYPES,
    SEPARATE_CONSENT_KINDS,
    Exemption,
    Purpose,
    Region,
    Rule,
)
from tests.helpers import ROOT, shipped_rules

TABLE = shipped_rules()
RULES = TABLE.rules

EU27 = (
    "AT",
    "BE",
    "BG",
    "HR",
    "CY",
    "CZ",
    "DK",
    "EE",
    "FI",
    "FR",
    "DE",
    "GR",
    "HU",
    "IE",
    "IT",
    "LV",
    "LT",
    "LU",
    "MT",
    "NL",
    "PL",
    "PT",
    "RO",
    "SK",
    "SI",
    "ES",
    "SE",
)


@pytest.mark.parametrize(
    ("country", "subdivision", "expected"),
    [
        ("DE", None, "gdpr"),
        ("DE", "BY", "gdpr"),
        ("FR", None, "gdpr"),
        ("IS", None, "gdpr"),
        ("LI", None, "gdpr"),
        ("NO", None, "gdpr"),
        # EU outermost regions geolocate as their own countries, and Åland.
        ("GF", None, "gdpr"),
        ("GP", None, "gdpr"),
        ("MQ", None, "gdpr"),
        ("RE", None, "gdpr"),
        ("YT", None, "gdpr"),
        ("MF", None, "gdpr"),
        ("AX", None, "gdpr"),
        ("ES", "CN", "gdpr"),  # Canary Islands arrive as a Spanish subdivision
        # GDPR-equivalent crown dependencies and Gibraltar.
        ("GI", None, "gdpr"),
        ("JE", None, "gdpr"),
        ("GG", None, "gdpr"),
        ("IM", None, "gdpr"),
        ("GB", None, "uk"),
        ("GB", "SCT", "uk"),
        ("CH", None, "ch"),
        ("US", "CA", "ccpa"),
        ("US", "CO", "us-states"),
        ("US", "TX", "us-states"),
        ("US", "NJ", "us-states"),
        ("US", "VA", "us-va"),  # sells no precise geolocation (2026 Acts ch. 820)
        ("US", "MD", "us-md"),
        ("US", "CT", "us-ct"),
        ("US", "OR", "us-or"),
        ("US", "UT", "us-states-gpc-optional"),
        ("US", "RI", "us-states-gpc-optional"),
        ("US", None, "us"),  # country-only database: the union of US obligations
        ("US", "FL", "us"),  # no listed privacy act
        ("US", "ZZZ", "us"),
        ("CA", "QC", "quebec"),
        ("CA", "ON", "canada"),
        ("CA", None, "canada"),
        ("BR", None, "lgpd"),
        ("CN", None, "pipl"),
        ("HK", None, "default"),  # PIPL does not apply in Hong Kong
        ("JP", None, "appi"),
        ("KR", None, "pipa"),
        ("IN", None, "dpdp"),
        ("SG", None, "pdpa"),
        ("AU", None, "au"),
        ("MX", None, "default"),
        ("XX", None, "default"),
        (None, None, "default"),
        ("", None, "default"),
        (None, "CA", "default"),
        ("??", None, "default"),
        (" ", None, "default"),
        # Tolerated sloppiness: lower case and stray spaces still resolve.
        ("us", "ca", "ccpa"),
        ("de", None, "gdpr"),
        ("US", "ca", "ccpa"),
        (" gb ", None, "uk"),
    ],
)
def test_rule_for_region(country: str | None, subdivision: str | None, expected: str) -> None:
    assert TABLE.rule_for(Region(country, subdivision)).id == expected
    assert TABLE.for_site({}).rule(Region(country, subdivision)).id == expected


def test_every_template_is_reachable_and_every_member_state_is_gdpr() -> None:
    reached = set(TABLE.regions.values()) | {TABLE.strictest_id}
    assert reached == set(RULES)
    assert all(TABLE.rule_for(Region(c)).id == "gdpr" for c in EU27)
    assert "EU" not in TABLE.regions  # not an ISO 3166-1 code (and not valid in Consent Mode)


def test_strictest_rule_fails_closed() -> None:
    strictest = RULES[TABLE.strictest_id]
    assert strictest.model == "opt-in"
    assert not strictest.default_granted
    assert strictest.reject_on_first_layer
    assert TABLE.rule_for(Region()) is strictest


@pytest.mark.parametrize("rule", list(RULES.values()), ids=list(RULES))
def test_template_is_consistent(rule: Rule) -> None:
    assert set(rule.consent_mode) == set(CONSENT_MODE_TYPES)
    assert rule.default_granted == (rule.model != "opt-in")
    assert rule.consent_mode["security_storage"] == "granted"
    if rule.model == "opt-in":
        # Nothing non-essential before consent; not even what a rule exempts (UK 2026): only a
        # site purpose that qualifies by fact grants its types (PECR Sch. A1 para 5).
        assert {t for t, v in rule.consent_mode.items() if v == "granted"} == {"security_storage"}
    else:
        # Granted before a choice, except the types the rule keeps opt-in (CH: ad types).
        assert {t for t, v in rule.consent_mode.items() if v == "denied"} == set(rule.opt_in_types)
        # Honour GPC wherever the law grants an opt-out: nothing in these laws forbids it.
        assert rule.gpc
    # Every template names what it encodes: statute sections and regulator guidance.
    law, guidance = TABLE.sources[rule.id]
    assert law and guidance
    assert set(rule.separate_consent) <= set(SEPARATE_CONSENT_KINDS)
    assert rule.name
    # TCF Policies ch. II: remind of the right to withdraw at least every 13 months.
    assert rule.reprompt_months <= 13


@pytest.mark.parametrize(
    ("rule_id", "expected"),
    [
        (
            "gdpr",
            {
                "model": "opt-in",
                "gpc": False,
                "reject_on_first_layer": True,
                "age_of_consent": 16,
                "reprompt_months": 13,
                "reprompt_after_refusal_months": 6,
            },
        ),
        (
            "uk",
            {
                "model": "opt-in",
                "age_of_consent": 13,
                "exempt_purposes": ("analytics", "functionality", "security"),
            },
        ),
        ("ch", {"model": "opt-out", "reject_on_first_layer": True, "age_of_consent": None}),
        (
            "ccpa",
            {
                "model": "opt-out",
                "gpc": True,
                "do_not_sell_link": True,
                "limit_sensitive_link": True,
                "age_of_consent": 16,
                "reprompt_after_refusal_months": 12,
            },
        ),
        ("us-states", {"gpc": True, "do_not_sell_link": True, "limit_sensitive_link": False}),
        ("us-states-gpc-optional", {"gpc": True, "do_not_sell_link": True}),
        ("quebec", {"model": "opt-in", "age_of_consent": 14}),
        ("canada", {"model": "opt-out", "age_of_consent": 13}),
        ("lgpd", {"model": "opt-in", "reject_on_first_layer": True, "age_of_consent": 12}),
        (
            "pipl",
            {
                "model": "opt-in",
                "age_of_consent": 14,
                "separate_consent": (
                    "sensitive",
                    "third_party",
                    "cross_border",
                    "public_disclosure",
                ),
            },
        ),
        # APPI Art. 28: prior consent to provide to a third party abroad (W11).
        (
            "appi",
            {"model": "notice", "separate_consent": ("sensitive", "third_party", "cross_border")},
        ),
        (
            "pipa",
            {
                "model": "opt-in",
                "age_of_consent": 14,
                "separate_consent": ("sensitive", "third_party", "cross_border"),
            },
        ),
        ("dpdp", {"model": "opt-in", "age_of_consent": 18}),
        ("pdpa", {"model": "notice"}),
        ("au", {"model": "notice"}),
        ("default", {"model": "opt-in", "age_of_consent": 16, "gpc": True}),
    ],
)
def test_template_facts(rule_id: str, expected: dict[str, Any]) -> None:
    rule = RULES[rule_id]
    assert {name: getattr(rule, name) for name in expected} == expected


def test_us_fallback_is_the_union_of_us_templates() -> None:
    """Fail closed for FL, an unknown state, and OK/LA/AL/VT before their laws start."""
    union = RULES["us"]
    us_rules = [rid for rid in RULES if rid == "ccpa" or rid.startswith("us-")]
    assert len(us_rules) == 7
    for rid in us_rules:
        rule = RULES[rid]
        for flag in ("gpc", "do_not_sell_link", "limit_sensitive_link"):
            assert getattr(union, flag) or not getattr(rule, flag), (rid, flag)
        assert set(rule.separate_consent) <= set(union.separate_consent)
        assert (union.age_of_consent or 0) >= (rule.age_of_consent or 0)
        assert union.reprompt_after_refusal_months >= rule.reprompt_after_refusal_months
        # A sensitive-data sale ban covers precise geolocation (it is sensitive data there).
        assert set(rule.prohibited) <= {"sale_of_sensitive", "sale_of_precise_location"}
        assert not rule.prohibited or "sale_of_sensitive" in union.prohibited
        assert union.minor_age >= rule.minor_age
        assert set(rule.minor_prohibited) <= set(union.minor_prohibited)


@pytest.mark.parametrize(
    ("country", "rule_id", "expected"),
    [
        # GDPR Art. 8(1) as each state set it.
        ("FR", "gdpr", 15),
        ("DE", "gdpr", 16),
        ("BE", "gdpr", 13),
        ("ES", "gdpr", 14),
        ("IT", "gdpr", 14),
        # French outermost regions: loi Informatique et Libertés art. 45 (15).
        ("GF", "gdpr", 15),
        ("GP", "gdpr", 15),
        ("MQ", "gdpr", 15),
        ("RE", "gdpr", 15),
        ("YT", "gdpr", 15),
        ("MF", "gdpr", 15),
        # Åland: the Finnish Data Protection Act s. 5 (13).
        ("AX", "gdpr", 13),
        ("GI", "gdpr", 16),  # no national figure: the Regulation's own
        ("GB", "uk", 13),  # DPA 2018 s. 9
        ("CN", "pipl", 14),  # PIPL Art. 31
        ("CH", "ch", None),
    ],
)
def test_age_of_consent(country: str, rule_id: str, expected: int | None) -> None:
    assert TABLE.age_of_consent(Region(country), RULES[rule_id]) == expected


def test_national_ages_survive_site_overrides_that_keep_the_age() -> None:
    """GDPR Art. 8(1): a site that changes another field keeps the national figure (DK 13)."""
    site = TABLE.for_site({"*": {"reprompt_after_refusal_months": 3}})
    dk = site.rule(Region("DK"))
    assert dk.id.startswith("gdpr+")
    assert TABLE.age_of_consent(Region("DK"), dk) == 13
    assert TABLE.age_of_consent(Region("RE"), site.rule(Region("RE"))) == 15
    # A site that states its own age means it everywhere the override applies.
    own = TABLE.for_site({"*": {"age_of_consent": 16}})
    assert TABLE.age_of_consent(Region("DK"), own.rule(Region("DK"))) == 16


def _purpose(pid: str, modes: tuple[str, ...], **kw: Any) -> Purpose:
    return Purpose(id=pid, name=pid, description=pid, consent_mode=modes, **kw)


STATS = Exemption(
    category="analytics",
    improves_service_only=True,
    shared_only_to_improve=True,
    provider_is_processor=True,
)
APPEARANCE = Exemption(category="functionality")


@pytest.mark.parametrize(
    ("purpose", "exempt"),
    [
        # PECR Sch. A1 para 5 and ICO guidance: exempt only when the site declares the facts.
        (_purpose("analytics", ("analytics_storage",), exemption=STATS), True),
        (_purpose("stats", ("analytics_storage",), exemption=STATS), True),  # whatever its id
        (_purpose("prefs", ("functionality_storage",), exemption=APPEARANCE), True),  # para 6
        # By category alone, nothing qualifies any more (W4).
        (_purpose("analytics", ("analytics_storage",)), False),
        (_purpose("prefs", ("functionality_storage",)), False),
        # A declaration missing a fact the law or the ICO requires does not qualify.
        (
            _purpose(
                "ga4",
                ("analytics_storage",),
                exemption=Exemption("analytics", True, True, provider_is_processor=False),
            ),
            False,
        ),
        (
            _purpose(
                "shared",
                ("analytics_storage",),
                exemption=Exemption("analytics", True, False, True),
            ),
            False,
        ),
        # Everything it maps must be of the declared category's types.
        (_purpose("mixed", ("analytics_storage", "functionality_storage"), exemption=STATS), False),
        (_purpose("ga_ads", ("analytics_storage", "ad_storage"), exemption=STATS), False),
        (_purpose("sold", ("analytics_storage",), sale_or_share=True, exemption=STATS), False),
        (_purpose("third", ("analytics_storage",), separate="third_party", exemption=STATS), False),
        (_purpose("nothing", (), exemption=STATS), False),
    ],
)
def test_uk_exemption_by_fact(purpose: Purpose, exempt: bool) -> None:
    assert purposes.is_exempt(RULES["uk"], purpose) is exempt
    assert purposes.is_exempt(RULES["gdpr"], purpose) is False


def test_exemption_by_site_purpose_id_needs_the_declaration_too() -> None:
    rule = TABLE.apply_override(RULES["gdpr"], {"exempt_purposes": ["audience"]})
    assert purposes.is_exempt(rule, _purpose("audience", ("analytics_storage",), exemption=STATS))
    assert not purposes.is_exempt(rule, _purpose("audience", ("analytics_storage",)))
    assert not purposes.is_exempt(
        rule, _purpose("analytics", ("analytics_storage",), exemption=STATS)
    )


@pytest.mark.parametrize(
    ("overrides", "country", "subdivision", "expected"),
    [
        # The most specific code naming a template wins; the site's wins at the same code.
        ({"US": {"rule": "gdpr"}}, "US", "FL", {"id": "gdpr"}),
        ({"US": {"rule": "gdpr"}}, "US", None, {"id": "gdpr"}),
        ({"US": {"rule": "gdpr"}}, "US", "CA", {"id": "ccpa"}),  # US-CA has a rule of its own
        ({"US": {"rule": "gdpr"}}, "DE", None, {"id": "gdpr"}),
        ({"US-TX": {"rule": "ccpa"}}, "US", "TX", {"id": "ccpa"}),
        ({"DE": {"rule": "uk"}}, "DE", "BY", {"id": "uk"}),
        # "*" stands for every region nothing else maps: it replaces the fail-closed default.
        ({"*": {"rule": "gdpr"}}, "MX", None, {"id": "gdpr"}),
        ({"*": {"rule": "gdpr"}}, None, None, {"id": "gdpr"}),
        ({"*": {"rule": "gdpr"}}, "CN", None, {"id": "pipl"}),
        ({"*": {"rule": "gdpr"}, "US-CA": {"rule": "ccpa"}}, "US", "CA", {"id": "ccpa"}),
        (
            {"US-CA": {"reject_on_first_layer": True}},
            "US",
            "CA",
            {"reject_on_first_layer": True, "gpc": True, "model": "opt-out"},
        ),
        ({"US-CA": {"reject_on_first_layer": True}}, "US", "TX", {"id": "us-states"}),
        (
            {"*": {"reprompt_after_refusal_months": 3}},
            None,
            None,
            {"reprompt_after_refusal_months": 3, "model": "opt-in"},
        ),
        (
            {"*": {"reprompt_after_refusal_months": 3}, "DE": {"reprompt_after_refusal_months": 1}},
            "DE",
            None,
            {"reprompt_after_refusal_months": 1},
        ),
        # Field changes apply to a code and everything under it, from "*" to the subdivision.
        (
            {
                "*": {"reject_on_first_layer": True},
                "US": {"rule": "us-states", "gpc": False},
                "US-CA": {"do_not_sell_link": False},
            },
            "US",
            "CA",
            {
                "reject_on_first_layer": True,
                "gpc": False,
                "do_not_sell_link": False,
                "limit_sensitive_link": True,
            },
        ),
        (
            {
                "*": {"reject_on_first_layer": True},
                "US": {"rule": "us-states", "gpc": False},
                "US-CA": {"do_not_sell_link": False},
            },
            "US",
            "FL",
            {
                "reject_on_first_layer": True,
                "gpc": False,
                "do_not_sell_link": True,
                "limit_sensitive_link": False,
                "age_of_consent": 18,
            },
        ),
        # A new model brings its own defaults unless the override states them.
        (
            {"US-CA": {"model": "opt-in"}},
            "US",
            "CA",
            {
                "default_granted": False,
                "consent_mode": {
                    **dict.fromkeys(CONSENT_MODE_TYPES, "denied"),
                    "security_storage": "granted",
                },
            },
        ),
        (
            {"GB": {"consent_mode": {"analytics_storage": "denied"}}},
            "GB",
            None,
            {"consent_mode": {**RULES["uk"].consent_mode, "analytics_storage": "denied"}},
        ),
        (
            {"GB": {"age_of_consent": 0, "separate_consent": []}},
            "GB",
            None,
            {"age_of_consent": None, "separate_consent": ()},
        ),
    ],
)
def test_rule_for_with_overrides(
    overrides: dict[str, dict[str, Any]],
    country: str | None,
    subdivision: str | None,
    expected: dict[str, Any],
) -> None:
    site = TABLE.for_site(overrides)
    rule = site.rule(Region(country, subdivision))
    assert {name: getattr(rule, name) for name in expected} == expected
    assert site.rule(Region(country, subdivision)) is rule  # memoised, stable


def test_changed_rules_get_derived_ids() -> None:
    a = TABLE.for_site({"FR": {"reject_on_first_layer": False}}).rule(Region("FR"))
    b = TABLE.for_site({"FR": {"reject_on_first_layer": False}}).rule(Region("FR"))  # another site
    c = TABLE.for_site({"FR": {"age_of_consent": 15}}).rule(Region("FR"))
    assert a.id.startswith("gdpr+")
    assert a.id == b.id
    assert c.id.startswith("gdpr+")
    assert c.id != a.id
    assert TABLE.for_site({"DE": {"age_of_consent": 15}}).rule(Region("FR")) is RULES["gdpr"]
    # One "*" override gives every gdpr country the same Rule object.
    star = TABLE.for_site({"*": {"reprompt_months": 6}})
    assert star.rule(Region("FR")) is star.rule(Region("DE"))
    assert star.rule(Region("GB")).id.startswith("uk+")


def test_empty_overrides_are_the_shipped_rules() -> None:
    assert TABLE.for_site({}).rule(Region("US", "CA")) is RULES["ccpa"]
    assert TABLE.rule_for(Region("US", "CA")) is RULES["ccpa"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({}, {"id": "ccpa"}),
        ({"rule": "gdpr"}, {"id": "gdpr", "model": "opt-in"}),
        ({"gpc": False}, {"gpc": False, "do_not_sell_link": True}),
        (
            {"rule": "gdpr", "reject_on_first_layer": False},
            {"model": "opt-in", "reject_on_first_layer": False},
        ),
        ({"model": "notice"}, {"model": "notice", "default_granted": True}),
        (
            {"model": "opt-in", "consent_mode": {"analytics_storage": "granted"}},
            {
                "default_granted": False,
                "consent_mode": {
                    **dict.fromkeys(CONSENT_MODE_TYPES, "denied"),
                    "security_storage": "granted",
                    "analytics_storage": "granted",
                },
            },
        ),
        (
            {"separate_consent": ["third_party"], "exempt_purposes": ["analytics"]},
            {"separate_consent": ("third_party",), "exempt_purposes": ("analytics",)},
        ),
        ({"name": "California (site)"}, {"name": "California (site)"}),
    ],
)
def test_apply_override(override: dict[str, Any], expected: dict[str, Any]) -> None:
    rule = TABLE.apply_override(RULES["ccpa"], override)
    assert {name: getattr(rule, name) for name in expected} == expected
    if {k for k in override if k != "rule"}:
        assert "+" in rule.id
    assert RULES["ccpa"].gpc  # the shipped template is untouched


def test_apply_override_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="unknown template"):
        TABLE.apply_override(RULES["gdpr"], {"rule": "gdrp"})


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (
            {
                "US-CA": {"rule": "ccpa"},
                "*": {"gpc": True},
                "DE": {"consent_mode": {"ad_storage": "denied"}},
            },
            [],
        ),
        (
            {"US-CA": {"rule": "gdrp"}},
            ["\"US-CA\".rule: unknown template 'gdrp' (hint: one of gdpr"],
        ),
        ({"DE": {"rejcet_on_first_layer": True}}, ['"DE".rejcet_on_first_layer: unknown field']),
        ({"DE": {"gpc": "yes"}}, ["\"DE\".gpc: expected true or false, got str 'yes'"]),
        ({"DE": {"age_of_consent": True}}, ['"DE".age_of_consent: expected a whole number']),
        ({"DE": {"age_of_consent": 99}}, ['"DE".age_of_consent: expected a whole number']),
        ({"DE": {"reprompt_months": "13"}}, ['"DE".reprompt_months: expected']),
        ({"DE": {"reprompt_days": 395}}, ['"DE".reprompt_days: renamed: use reprompt_months']),
        ({"DE": {"model": "opt_in"}}, ["\"DE\".model: expected 'opt-in'"]),
        (
            {"DE": {"separate_consent": ["sensitive", "biometric"]}},
            ['"DE".separate_consent: expected a list of'],
        ),
        ({"DE": {"separate_consent": "sensitive"}}, ['"DE".separate_consent: expected a list']),
        ({"DE": {"exempt_purposes": [""]}}, ['"DE".exempt_purposes: expected a list']),
        (
            {"DE": {"consent_mode": {"ads_storage": "denied"}}},
            ["\"DE\".consent_mode: unknown Consent Mode type 'ads_storage'"],
        ),
        (
            {"DE": {"consent_mode": {"ad_storage": True}}},
            ["\"DE\".consent_mode: ad_storage: expected 'granted' or 'denied'"],
        ),
        ({"DE": {"consent_mode": "denied"}}, ['"DE".consent_mode: expected a table']),
        ({"DE": {"id": "mine"}}, ['"DE".id: cannot be set (hint: use rule = "<template>"']),
        (
            {"DE": {"model": "opt-in", "default_granted": True}},
            ["\"DE\": model 'opt-in' cannot have default_granted = true"],
        ),
        ({"DE": "gdpr"}, ['"DE": expected a table of rule fields']),
        ({"us-ca": {"gpc": True}}, ['"us-ca": write region codes in upper case: "US-CA"']),
        ({"UK": {"rule": "uk"}}, ['"UK": not an ISO 3166 code; the United Kingdom is "GB"']),
        ({"EU": {"rule": "gdpr"}}, ['"EU": not an ISO 3166 code; list the member states']),
        ({"USA": {"gpc": True}}, ['"USA": malformed region code']),
        ({"US_CA": {"gpc": True}}, ['"US_CA": malformed region code']),
        ({5: {"gpc": True}}, ["5: a region code must be a string"]),
        (
            {"DE": {"gpc": 1, "rule": "x"}},
            ['"DE".gpc: expected true or false', '"DE".rule: unknown template'],
        ),
    ],
)
def test_validate_overrides(overrides: dict[Any, Any], fragments: list[str]) -> None:
    problems = TABLE.validate_overrides(overrides)
    # One problem per offending key or field, each naming the key, the field and a hint.
    assert len(problems) == len(fragments), problems
    for fragment in fragments:
        assert any(fragment in problem for problem in problems), (fragment, problems)


def test_validate_overrides_checks_exempt_purposes_against_the_site() -> None:
    overrides = {"FR": {"exempt_purposes": ["analytics", "audience", "stats"]}}
    assert TABLE.validate_overrides(overrides) == []
    assert TABLE.validate_overrides(overrides, purpose_ids={"audience", "marketing"}) == [
        "\"FR\".exempt_purposes: unknown ['stats'] (hint: a purpose id of this site or one of "
        "analytics, functionality, security)"
    ]


def test_validate_overrides_rejects_a_non_table() -> None:
    assert TABLE.validate_overrides(["US-CA"]) == [
        'expected tables keyed by region, e.g. [rules."US-CA"] rule = "ccpa"'
    ]
    assert TABLE.validate_overrides({}) == []


def test_rule_for_refuses_invalid_overrides() -> None:
    with pytest.raises(ConfigError, match="unknown template"):
        TABLE.for_site({"DE": {"rule": "nope"}})


def test_rule_table_markdown_is_generated_from_the_data() -> None:
    table = rule_docs.rule_table_markdown(TABLE)
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(RULES)
    for code, rid in TABLE.regions.items():
        row = next(r for r in rows if r.startswith(f"| `{rid}` |"))
        assert code in row.split("|")[2]
    assert "anything else, unknown" in next(r for r in rows if r.startswith("| `default`"))
    ccpa = next(r for r in rows if r.startswith("| `ccpa`")).split("|")
    assert [c.strip() for c in ccpa[3:10]] == ["opt-out", "yes", "yes", "—", "yes", "yes", "—"]


def test_rule_for_is_a_couple_of_dict_lookups() -> None:
    regions = [Region("US", "CA"), Region("DE"), Region("US", "FL"), Region(), Region("ZZ")]
    overrides = {"*": {"reject_on_first_layer": True}, "US-CA": {"gpc": True}}
    n = 20_000
    for site in (TABLE.for_site({}), TABLE.for_site(overrides)):
        start = time.perf_counter()
        for _ in range(n):
            for region in regions:
                site.rule(region)
        per_call = (time.perf_counter() - start) / (n * len(regions))
        assert per_call < 10e-6, per_call  # measured ~0.2-0.4 µs here; generous for slow CI


def test_a_table_of_its_own_is_loaded_from_a_file(tmp_path: Path) -> None:
    shipped = (ROOT / "gateway" / "core" / "rules" / "jurisdictions.toml").read_text("utf-8")
    path = tmp_path / "rules.toml"
    path.write_text(shipped.replace('strictest = "default"', 'strictest = "gdpr"'), "utf-8")
    table = j.load_rules(path)
    assert table.rule_for(Region("ZZ")) is table.strictest is table.rules["gdpr"]
    assert TABLE.rule_for(Region("ZZ")).id == "default"  # the shipped table is untouched
    # A site's resolver uses the table it was made from, not some process-wide one.
    assert table.for_site({"*": {"gpc": True}}).rule(Region("MX")).id.startswith("gdpr+")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('strictest = "default"', 'strictest = "nope"'), "strictest rule 'nope' is not"),
        (("[exempt_categories]", "[exempt_categories\n"), "not valid TOML"),
    ],
)
def test_a_broken_rule_file_names_itself(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    shipped = (ROOT / "gateway" / "core" / "rules" / "jurisdictions.toml").read_text("utf-8")
    path = tmp_path / "rules.toml"
    path.write_text(shipped.replace(*edit), "utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        j.load_rules(path)
    assert info.value.where == str(path)


# Every field issue 11 changed, the value it has, and the provision it encodes; the template's
# own sources (law or guidance, in the README) must name that provision.
PROVISIONS = [
    ("gdpr", "reprompt_months", 13, "TCF Policies ch. II"),
    ("gdpr", "reprompt_after_refusal_months", 6, "CNIL"),
    ("gdpr", "age_of_consent", 16, "8"),
    ("uk", "consent_mode.analytics_storage", "denied", "Sch. A1"),
    ("uk", "consent_mode.functionality_storage", "denied", "Sch. A1"),
    ("uk", "gpc_objects", True, "Sch. A1"),
    ("uk", "exempt_purposes", ("analytics", "functionality", "security"), "Sch. A1 paras 4-6"),
    ("ch", "consent_mode.ad_storage", "denied", "6(6)-(7)"),
    ("ch", "consent_mode.ad_personalization", "denied", "FDPIC guidelines"),
    ("ch", "opt_in_types", ("ad_storage", "ad_user_data", "ad_personalization"), "6(6)-(7)"),
    ("ccpa", "reprompt_after_refusal_months", 12, "1798.135(c)(4)"),
    ("us-states", "age_of_consent", 18, "CO"),
    ("us-md", "prohibited", ("sale_of_sensitive",), "14-4607(a)(1)-(2)"),
    ("us-md", "minor_age", 18, "(a)(4)-(5)"),
    ("us-md", "minor_prohibited", ("sale", "targeted_ads"), "(a)(4)-(5)"),
    ("us-ct", "minor_age", 18, "SB 1295"),
    ("us-ct", "minor_prohibited", ("sale", "targeted_ads"), "42-529a"),
    ("us-or", "prohibited", ("sale_of_precise_location",), "646A.578"),
    ("us-or", "minor_age", 16, "HB 2008"),
    ("us-va", "prohibited", ("sale_of_precise_location",), "ch. 820"),
    ("us", "prohibited", ("sale_of_sensitive",), "union"),
    ("us", "minor_age", 18, "union"),
    ("lgpd", "minor_age", 18, "Lei 15.211/2025"),
    ("lgpd", "minor_prohibited", ("targeted_ads",), "ECA Digital"),
    ("dpdp", "minor_age", 18, "9(3)"),
    ("dpdp", "minor_prohibited", ("targeted_ads", "tracking"), "9(3)"),
    ("appi", "separate_consent", ("sensitive", "third_party", "cross_border"),
     "Arts. 20(2), 27, 28"),
    ("pipl", "separate_consent", ("sensitive", "third_party", "cross_border", "public_disclosure"),
     "23, 24, 25, 26, 28, 29, 31, 39"),
    ("quebec", "age_of_consent", 14, "4.1"),
    ("dpdp", "notice_languages.0", "en", "5(3)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule_id", "name", "value", "provision"),
    PROVISIONS,
    ids=[f"{r}.{n}" for r, n, _, _ in PROVISIONS],
)
def test_changed_fields_encode_the_provision_their_template_cites(
    rule_id: str, name: str, value: object, provision: str
) -> None:
    rule = RULES[rule_id]
    field, _, key = name.partition(".")
    actual = getattr(rule, field)
    if key.isdigit():
        actual = actual[int(key)]
    elif key:
        actual = actual[key]
    assert actual == value
    law, guidance = TABLE.sources[rule_id]
    assert provision in f"{law} {guidance}", (rule_id, law, guidance)


def test_the_gdpr_template_serves_every_national_age() -> None:
    """GDPR Art. 8(1): the ages are served (W5), for every EEA state with a figure of its own."""
    gdpr = RULES["gdpr"]
    assert dict(gdpr.national_ages) == dict(TABLE.national_age_of_consent)
    assert set(EU27) <= set(gdpr.national_ages)
    assert all(13 <= age <= 16 for age in gdpr.national_ages.values())


def test_extends_inherits_all_but_identity_and_regions() -> None:
    md, states = RULES["us-md"], RULES["us-states"]
    assert (md.model, md.gpc, md.do_not_sell_link, md.separate_consent) == (
        states.model,
        states.gpc,
        states.do_not_sell_link,
        states.separate_consent,
    )
    assert md.name != states.name
    assert "US-MD" not in TABLE.regions or TABLE.regions["US-MD"] == "us-md"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["templates"]["us-md"].update(extends="nope"), "extends 'nope'"),
        (lambda d: d["templates"]["us-md"].update(extends="us-ct"), "extends 'us-ct'"),
        (lambda d: d["templates"]["uk"].pop("guidance"), "names the law it encodes"),
        (
            lambda d: d["templates"]["us"].update(regions_from={"US-OK": "2027-01-01"}),
            "expected a date",
        ),
        (
            lambda d: d["templates"]["us"].update(regions_from={"US-CA": dt.date(2027, 1, 1)}),
            "mapped twice",
        ),
        (lambda d: d["templates"]["gdpr"].update(reprompt_days=395), "renamed: use"),
        (lambda d: d["templates"]["us"].update(prohibited=["sale"]), "expected a list of"),
        (lambda d: d["exempt_categories"].update(ads=["ad_storage"]), "exempt categories are"),
    ],
)
def test_a_broken_rule_file_names_template_and_field(change: Any, message: str) -> None:
    data = tomllib.loads((ROOT / "gateway" / "core" / "rules" / "jurisdictions.toml").read_text())
    change(data)
    with pytest.raises(ConfigError, match=re.escape(message)):
        j.parse_rules(data, "rules.toml")


def test_a_site_can_add_bans_but_never_lift_the_laws() -> None:
    """Md. Com. Law 14-4607(a)(2), (4)-(5): no consent and no site setting makes these lawful."""
    site = TABLE.for_site({"US-MD": {"prohibited": [], "minor_prohibited": [], "minor_age": 0}})
    md = site.rule(Region("US", "MD"))
    assert md.prohibited == ("sale_of_sensitive",)
    assert (md.minor_age, md.minor_prohibited) == (18, ("sale", "targeted_ads"))
    stricter = TABLE.for_site({"US-CA": {"prohibited": ["sale_of_sensitive"], "minor_age": 16,
                                         "minor_prohibited": ["sale"]}})  # fmt: skip
    ca = stricter.rule(Region("US", "CA"))
    assert (ca.prohibited, ca.minor_age, ca.minor_prohibited) == (
        ("sale_of_sensitive",),
        16,
        ("sale",),
    )
