"""What the built-in banner layers say and offer under the issue-11 rules, rendered for real."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.core.model import ResolvedBanner, Rule
from gateway.serving.render import Renderer
from gateway.sites.catalog import SiteBundle, load_site
from gateway.sites.texts import BASE_TEXTS, DESCRIPTIONS
from tests.helpers import shipped_rules

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle() -> SiteBundle:
    return load_site(ROOT / "banners" / "demo", ROOT / "locales", shipped_rules())


def rule(rule_id: str, **changes: object) -> Rule:
    base = shipped_rules().rules[rule_id]
    return dataclasses.replace(base, **changes) if changes else base  # type: ignore[arg-type]


def render(
    bundle: SiteBundle,
    the_rule: Rule,
    locale: str = "en",
    *,
    gpc: bool = False,
    minor: bool = False,
) -> ResolvedBanner:
    return Renderer().resolve(bundle, the_rule, locale, gpc, minor)


def test_uk_banner_says_the_statistics_run_unless_the_visitor_objects(bundle: SiteBundle) -> None:
    """PECR Sch. A1 para 5(2)(c): clear and comprehensive information about the purpose; the
    opt-in description ("with your consent, to measure its audience") would be untrue."""
    banner = render(bundle, rule("uk"))
    assert banner.texts["description"] == BASE_TEXTS["objection_description"]
    assert "unless you object" in banner.html
    assert 'data-cg-action="reject_all"' in banner.html
    # The panel marks the exempt purpose, and only it.
    assert banner.preferences_html.count(BASE_TEXTS["objection_note"]) == 1
    german = render(bundle, rule("uk"), "de")
    assert "solange Sie nicht widersprechen" in german.texts["description"]


def test_the_uk_objection_stays_on_the_first_layer_whatever_the_site_overrides(
    bundle: SiteBundle,
) -> None:
    """PECR Sch. A1 para 5(2)(d): a simple means of objecting; a site turning off the first
    layer's reject button must not take the objection away from the first layer."""
    banner = render(bundle, rule("uk", reject_on_first_layer=False))
    assert 'data-cg-action="reject_all"' in banner.html
    # Where nothing runs on an exemption, the site's choice stands.
    gdpr = render(bundle, rule("gdpr", reject_on_first_layer=False))
    assert 'data-cg-action="reject_all"' not in gdpr.html
    assert gdpr.texts["description"] == DESCRIPTIONS["opt-in"]


def test_pipl_first_layer_names_each_purpose_that_needs_a_separate_consent(
    bundle: SiteBundle,
) -> None:
    """PIPL Arts. 23, 39: "Accept all" does not give a separate consent, so the first layer says
    which purposes it leaves out."""
    banner = render(bundle, rule("pipl"))
    assert f"Marketing: {BASE_TEXTS['separate_consent']}" in banner.html
    assert BASE_TEXTS["separate_consent"] not in render(bundle, rule("gdpr")).html


def test_a_known_minor_is_never_offered_a_prohibited_purpose(bundle: SiteBundle) -> None:
    """Md. Com. Law 14-4607(a)(4)-(5): no sale of, and no targeted ads to, a known minor: the
    panel has no switch for it (the snippet never turns it on either)."""
    adult = render(bundle, rule("us-md"))
    minor = render(bundle, rule("us-md"), minor=True)
    assert 'data-cg-purpose="marketing"' in adult.preferences_html
    assert 'data-cg-purpose="marketing"' not in minor.preferences_html
    assert 'data-cg-purpose="analytics"' in minor.preferences_html


@pytest.mark.parametrize(
    ("locale", "text"),
    [("en", "Opt-out preference signal honoured"), ("es", "Señal de preferencia de exclusión")],
)
def test_the_gpc_note_is_the_short_localized_status(
    bundle: SiteBundle, locale: str, text: str
) -> None:
    """11 CCR 7025(c)(6): the display that the signal was processed, in the visitor's language."""
    banner = render(bundle, rule("ccpa"), locale, gpc=True)
    assert banner.texts["gpc_status"].startswith(text)
    assert f"data-cg-gpc>{banner.texts['gpc_status']}</p>" in banner.html
