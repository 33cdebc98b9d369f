"""Consent Mode v2 defaults and updates, and Global Privacy Control, for the demo site."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.core.model import CONSENT_MODE_TYPES, Purpose, Site
from gateway.signals import consent_mode, gpc
from gateway.sites.sitefile import read_site
from tests.helpers import shipped_rules

DEMO_TOML = Path(__file__).resolve().parent.parent / "banners" / "demo" / "site.toml"
G, D = "granted", "denied"


# The demo site as the catalog reads it (its analytics purpose declares the UK statistics facts).
DEMO = read_site(DEMO_TOML.parent)
RULES = shipped_rules().rules


def _site(*purposes: Purpose) -> Site:
    return Site(
        id="t",
        name="t",
        default_locale="en",
        locales=("en",),
        allowed_origins=(),
        purposes=purposes,
    )


def _p(pid: str, *modes: str, **kw: Any) -> Purpose:
    return Purpose(id=pid, name=pid, description=pid, consent_mode=modes, **kw)


def test_demo_site_has_the_purposes_these_tests_assume() -> None:
    assert [p.id for p in DEMO.purposes] == [
        "necessary",
        "analytics",
        "marketing",
        "personalization",
    ]
    marketing = DEMO.purpose("marketing")
    assert marketing is not None
    assert (marketing.consent_mode, marketing.sale_or_share, marketing.separate) == (
        ("ad_storage", "ad_user_data", "ad_personalization"),
        True,
        "third_party",
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1"], True),
        (["0"], False),
        ([" 1"], False),
        (["1 "], False),
        (["1", "0"], True),  # two Sec-GPC headers: one of them is exactly "1"
        (["0", "1"], True),
        (["1, 0"], False),  # one header with a list is not the value "1"
        (["true"], False),
        (["01"], False),
        ([""], False),
        ([], False),
        ((), False),
        ("1", True),  # a lone value passed as a string
        ("10", False),
        ("0", False),
    ],
)
def test_gpc_requested(values: Any, expected: bool) -> None:
    assert gpc.gpc_requested(values) is expected


@pytest.mark.parametrize(
    ("day", "text"),
    [(datetime.date(2026, 2, 5), "2026-02-05"), (datetime.date(2025, 12, 31), "2025-12-31")],
)
def test_well_known(day: datetime.date, text: str) -> None:
    body = gpc.well_known(day)
    assert isinstance(body, bytes)
    assert json.loads(body) == {"gpc": True, "lastUpdate": text}


ALL_ON = {"necessary": True, "analytics": True, "marketing": True, "personalization": True}


@pytest.mark.parametrize(
    ("rule_id", "expected"),
    [
        ("ccpa", {**ALL_ON, "marketing": False}),
        ("us-states", {**ALL_ON, "marketing": False}),
        ("us-states-gpc-optional", {**ALL_ON, "marketing": False}),
        ("canada", {**ALL_ON, "marketing": False}),
        ("default", {**ALL_ON, "marketing": False}),
        # GPC is not a GDPR withdrawal: an explicit consent stands.
        ("gdpr", ALL_ON),
        # UK: GPC is an objection to what runs on the statistics exemption (Sch. A1 para 5(2)(d);
        # LG Berlin 16 O 420/19 on DNT), and only to that: the marketing consent stands (W16).
        ("uk", {**ALL_ON, "analytics": False}),
        ("pipl", ALL_ON),
    ],
)
def test_apply_gpc(rule_id: str, expected: dict[str, bool]) -> None:
    choices = dict(ALL_ON)
    assert gpc.apply_gpc(RULES[rule_id], DEMO, choices) == expected
    assert choices == ALL_ON  # the caller's mapping is not changed


def test_apply_gpc_adds_a_missing_sale_purpose_as_off() -> None:
    assert gpc.apply_gpc(RULES["ccpa"], DEMO, {"analytics": True}) == {
        "analytics": True,
        "marketing": False,
    }


OFF = {"necessary": True, "analytics": False, "marketing": False, "personalization": False}


@pytest.mark.parametrize(
    ("rule_id", "signal", "expected"),
    [
        ("gdpr", False, OFF),
        ("gdpr", True, OFF),
        ("quebec", False, OFF),
        ("pipl", False, OFF),
        ("default", True, OFF),
        ("uk", False, {**OFF, "analytics": True}),  # UK 2026 statistics exemption
        ("ccpa", False, ALL_ON),
        ("ccpa", True, {**ALL_ON, "marketing": False}),
        ("us-states", True, {**ALL_ON, "marketing": False}),
        # CH: advertising profiles are opt-in (revFADP Art. 6(7); FDPIC Jan 2025; W8).
        ("ch", False, {**ALL_ON, "marketing": False}),
        ("canada", True, {**ALL_ON, "marketing": False}),
        # APPI: provision to a third party needs prior consent even under a notice model.
        ("appi", False, {**ALL_ON, "marketing": False}),
        ("pdpa", False, ALL_ON),
        ("pdpa", True, {**ALL_ON, "marketing": False}),
        ("au", False, ALL_ON),
    ],
)
def test_default_choices(rule_id: str, signal: bool, expected: dict[str, bool]) -> None:
    assert gpc.default_choices(RULES[rule_id], DEMO, signal) == expected


def test_default_choices_separate_sensitive_purpose_is_off_under_opt_out() -> None:
    site = _site(
        _p("health", "personalization_storage", separate="sensitive"),
        _p("ads", "ad_storage", sale_or_share=True),
    )
    assert gpc.default_choices(RULES["us-states"], site, False) == {"health": False, "ads": True}
    assert gpc.default_choices(RULES["ccpa"], site, False) == {"health": True, "ads": True}


def _modes(**granted: bool) -> dict[str, str]:
    return {t: G if granted.get(t, False) else D for t in CONSENT_MODE_TYPES}


NECESSARY = {"security_storage": True, "functionality_storage": True}


@pytest.mark.parametrize(
    ("rule_id", "signal", "expected"),
    [
        ("gdpr", False, _modes(**NECESSARY)),
        ("pipl", False, _modes(**NECESSARY)),
        ("default", True, _modes(**NECESSARY)),
        ("uk", False, _modes(**NECESSARY, analytics_storage=True)),
        ("ccpa", False, dict.fromkeys(CONSENT_MODE_TYPES, G)),
        ("ccpa", True, _modes(**NECESSARY, analytics_storage=True, personalization_storage=True)),
        ("gdpr", True, _modes(**NECESSARY)),
        ("appi", False, _modes(**NECESSARY, analytics_storage=True, personalization_storage=True)),
    ],
)
def test_consent_mode_defaults_for_the_demo(
    rule_id: str, signal: bool, expected: dict[str, str]
) -> None:
    values = consent_mode.defaults(RULES[rule_id], DEMO, gpc=signal)
    assert values == expected
    assert list(values) == list(CONSENT_MODE_TYPES)


@pytest.mark.parametrize(
    ("rule_id", "signal", "expected"),
    [
        # No purpose maps anything: security is granted, the rest follow the rule's defaults.
        ("gdpr", False, _modes(security_storage=True)),
        # UK: nothing runs on the exemption unless a qualifying purpose maps it (Sch. A1; W2).
        ("uk", False, _modes(security_storage=True)),
        ("ccpa", False, dict.fromkeys(CONSENT_MODE_TYPES, G)),
        # GPC denies advertising types even when no purpose maps them.
        (
            "ccpa",
            True,
            _modes(
                security_storage=True,
                analytics_storage=True,
                functionality_storage=True,
                personalization_storage=True,
            ),
        ),
        ("gdpr", True, _modes(security_storage=True)),
    ],
)
def test_consent_mode_defaults_for_unmapped_types(
    rule_id: str, signal: bool, expected: dict[str, str]
) -> None:
    site = _site(_p("necessary", essential=True))
    assert consent_mode.defaults(RULES[rule_id], site, gpc=signal) == expected


def test_a_type_is_granted_only_if_every_purpose_mapping_it_is_on() -> None:
    site = _site(
        _p("ads", "ad_storage", "ad_user_data"),
        _p("crm", "ad_user_data"),
        _p("core", "security_storage", essential=True),
    )
    assert consent_mode.update(site, {"ads": True, "crm": False}) == {
        "ad_storage": G,
        "ad_user_data": D,
        "security_storage": G,
    }
    assert consent_mode.update(site, {"ads": True, "crm": True}) == {
        "ad_storage": G,
        "ad_user_data": G,
        "security_storage": G,
    }
    assert consent_mode.defaults(RULES["ccpa"], site)["ad_user_data"] == G
    assert consent_mode.defaults(RULES["gdpr"], site)["ad_user_data"] == D


@pytest.mark.parametrize(
    ("choices", "expected"),
    [
        (ALL_ON, dict.fromkeys(CONSENT_MODE_TYPES, G)),
        (OFF, _modes(**NECESSARY)),
        ({}, _modes(**NECESSARY)),  # a purpose missing from the choices counts as refused
        (
            {"marketing": True},
            _modes(**NECESSARY, ad_storage=True, ad_user_data=True, ad_personalization=True),
        ),
        ({"analytics": True, "unknown": True}, _modes(**NECESSARY, analytics_storage=True)),
        ({"necessary": False}, _modes(**NECESSARY)),  # essential cannot be refused
    ],
)
def test_consent_mode_update_for_the_demo(
    choices: dict[str, bool], expected: dict[str, str]
) -> None:
    assert consent_mode.update(DEMO, choices) == expected


def test_update_leaves_unmapped_types_to_their_defaults() -> None:
    site = _site(_p("analytics", "analytics_storage"))
    assert consent_mode.update(site, {"analytics": True}) == {"analytics_storage": G}


def test_gpc_defaults_then_update_agree() -> None:
    """The banner's default under GPC equals an update with the GPC-adjusted choices."""
    for rule in RULES.values():
        choices = gpc.default_choices(rule, DEMO, True)
        defaults = consent_mode.defaults(rule, DEMO, gpc=True)
        assert {**defaults, **consent_mode.update(DEMO, choices)} == defaults, rule.id


def test_wait_for_update() -> None:
    assert consent_mode.WAIT_FOR_UPDATE_MS == 500


def test_lint() -> None:
    assert consent_mode.lint(DEMO) == []
    site = _site(
        _p("ads", "ad_storage"),
        _p(
            "core",
            "ad_storage",
            "ad_user_data",
            "ad_personalization",
            essential=True,
            sale_or_share=True,
        ),
        _p("x", "cookie_storage"),
    )
    problems = consent_mode.lint(site)
    assert len(problems) == 3
    assert problems[0].startswith("purposes.ads: maps ad_storage without ad_user_data")
    assert problems[1].startswith("purposes.core: an essential purpose cannot be sale_or_share")
    assert problems[2] == "purposes.x: unknown Consent Mode types ['cookie_storage']"
