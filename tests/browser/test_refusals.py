"""Refusals in Chromium: an opt-out or objection outlives re-ask periods, cookie expiry and a new
consent_revision (review W1); the persistent GPC display (W12); PIPL separate consent."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.harness import NONCE, Gateway, demo_page, run_gateway
from tests.browser.servers import LoopbackServer
from tests.browser.test_banner import (
    BANNER,
    PREFS,
    action,
    data_layer,
    recorded,
    runs,
    stored,
    visit,
)

pytestmark = pytest.mark.browser

AD_TYPES = ("ad_storage", "ad_user_data", "ad_personalization")
# A sale/share purpose the site adds later: what visitors consent to changes (new revision).
PARTNERS = """
[[purposes]]
id = "partners"
name = "Partner offers"
description = "Shares your visits with retail partners so they can show you their offers."
cookies = ["_partner"]
consent_mode = ["ad_storage", "ad_user_data", "ad_personalization"]
sale_or_share = true
"""
# A tag of that purpose on the page, held back like the others.
PARTNER_TAG = (
    f'<script type="text/plain" data-category="partners" nonce="{NONCE}">'
    "window.partnerRuns = (window.partnerRuns || 0) + 1;</script>"
)


@pytest.fixture
def editable(site: LoopbackServer, tmp_path: Path) -> Iterator[tuple[Gateway, Path]]:
    """A gateway of its own whose banners/ a test may edit: it publishes valid edits live."""
    with run_gateway(site.origin, tmp_path, reload=True) as gw:
        yield gw, tmp_path / "banners" / "demo" / "site.toml"


def change_purposes(gateway: Gateway, toml: Path) -> str:
    """Add a sale/share purpose to the site; returns the new consent_revision once published."""
    before = gateway.get_json("/v1/sites/demo/config")["consent_revision"]
    toml.write_text(toml.read_text(encoding="utf-8") + PARTNERS, encoding="utf-8")
    deadline = time.monotonic() + 20
    since: float | None = None
    # Each worker of `serve` reloads on its own poll (once a second): the edit is published
    # once every answer for two seconds (fresh connections, any worker) carries it.
    while time.monotonic() < deadline:
        revision: str = gateway.get_json("/v1/sites/demo/config")["consent_revision"]
        if revision == before:
            since = None
        elif since is None:
            since = time.monotonic()
        elif time.monotonic() - since > 2.0:
            return revision
        time.sleep(0.1)
    raise AssertionError("the gateway did not publish the edited site")


def age_memory(page: Page, days: int) -> None:
    """Move the stored choice ``days`` into the past, in the cookie and its localStorage copy."""
    page.evaluate(
        """days => {
        const v = document.cookie.match(/(?:^|; )cg_consent=([^;]*)/)[1].split('|');
        v[3] = (Date.now() - days * 864e5).toString(36);
        const value = v.join('|');
        document.cookie = 'cg_consent=' + value + '; path=/; max-age=' + 400 * 86400;
        localStorage.setItem('cg_state', JSON.stringify(value));
        }""",
        days,
    )


def settled(page: Page) -> None:
    """Wait until the snippet has started (after asking the server, when it does)."""
    page.wait_for_function(
        "window.dataLayer && dataLayer.some(e => e && e.event === 'cg_consent_ready')"
    )


def recorded_anew(page: Page, before: dict[str, Any]) -> dict[str, Any]:
    """getConsent() once the gateway answered a choice made after ``before`` (a getConsent())."""
    page.wait_for_function(
        "id => { const c = ConsentGateway.getConsent();"
        " return c && c.receipt && c.receipt.record_id !== id; }",
        arg=before["receipt"]["record_id"],
    )
    consent: dict[str, Any] = page.evaluate("ConsentGateway.getConsent()")
    return consent


def consent_updates(page: Page) -> list[dict[str, str]]:
    return [e[2] for e in data_layer(page) if isinstance(e, list) and e[1] == "update"]


def cookie_value(context: BrowserContext) -> str:
    return next(c["value"] for c in context.cookies() if c["name"] == "cg_consent")


@pytest.mark.parametrize("region", ["US-CA", "US-TX"])
def test_an_opt_out_outlives_a_new_revision_and_the_re_ask_period(
    browser: Browser, site: LoopbackServer, editable: tuple[Gateway, Path], region: str
) -> None:
    """W1: Cal. Civ. Code 1798.135(c)(4) lets a business ask again after 12 months; it does not
    let the opt-out lapse. The threat: a re-shown banner turning sale/share back on by default."""
    gateway, toml = editable
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    try:
        visit(page, site, gateway, f"/w1-{region}", region, extra_body=PARTNER_TAG)
        expect(page.locator(BANNER)).to_be_visible()
        page.wait_for_function("window.adsRuns === 1")  # opt-out model: on until refused
        action(page, "do_not_sell")
        opted_out = recorded(page)
        assert opted_out["choices"]["marketing"] is False
        [record] = stored(gateway, opted_out)
        assert record["choices"]["marketing"] is False
        assert record["rule_id"] != "us"  # the region's own rule

        new_revision = change_purposes(gateway, toml)
        age_memory(page, 400)  # past 12 calendar months and the 393-day cookie life

        # The next visit: asked again, but nothing refused runs until the visitor answers.
        visit(page, site, gateway, f"/w1-{region}", region, extra_body=PARTNER_TAG)
        settled(page)
        expect(page.locator(BANNER)).to_be_visible()
        assert page.evaluate("ConsentGateway.config.consent_revision") == new_revision
        assert page.evaluate("ConsentGateway.getConsent()") is None
        page.wait_for_function("window.analyticsRuns === 1")  # never refused: still on
        page.wait_for_timeout(200)
        assert runs(page)["ads"] == 0 and runs(page)["frame"] == 0
        assert page.evaluate("window.partnerRuns") is None  # a sale/share purpose added later
        updates = consent_updates(page)
        assert updates, "Consent Mode was not updated from the stored refusal"
        for update in updates:
            assert {t: update[t] for t in AD_TYPES} == dict.fromkeys(AD_TYPES, "denied")
        # The cookie was written again on this visit, the sale/share opt-out in its refusals.
        assert "*s" in cookie_value(context).split("|")[6].split("~")

        # "OK" keeps what was refused, the new sale/share purpose included.
        action(page, "ok")
        answer = recorded_anew(page, opted_out)
        assert answer["revision"] == new_revision
        assert answer["choices"]["marketing"] is False
        assert answer["choices"]["partners"] is False
        assert answer["choices"]["analytics"] is True
        history = stored(gateway, answer, count=2)
        assert history[-1]["choices"]["partners"] is False
        assert history[-1]["consent_revision"] == new_revision
        page.wait_for_timeout(200)
        assert runs(page)["ads"] == 0
        assert all(u["ad_storage"] == "denied" for u in consent_updates(page))

        # Only the visitor's own act turns it back on.
        page.click("[data-cg-open]")
        action(page, "settings")
        page.locator(PREFS).get_by_role("switch", name="Marketing").check()
        action(page, "save")
        page.wait_for_function("window.adsRuns === 1")
        assert consent_updates(page)[-1]["ad_storage"] == "granted"
        assert recorded_anew(page, answer)["choices"]["marketing"] is True
    finally:
        context.close()


def test_a_uk_objection_to_exempt_statistics_outlives_a_new_revision(
    browser: Browser, site: LoopbackServer, editable: tuple[Gateway, Path]
) -> None:
    """W1 for PECR Sch. A1 para 5(2)(d): statistics run before a choice, until the visitor
    objects; the objection stands after the re-ask period and a change of purposes."""
    gateway, toml = editable
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    try:
        visit(page, site, gateway, "/w1-uk", "GB", accept_language="en-GB,en;q=0.9")
        banner = page.locator(BANNER)
        expect(banner).to_be_visible()
        # The first layer says the statistics run unless the visitor objects, and offers it.
        expect(banner.locator("#cg-desc")).to_contain_text("on unless you object")
        expect(banner.get_by_role("button", name="Reject all")).to_be_visible()
        page.wait_for_function("window.analyticsRuns === 1")  # exempt: runs before a choice
        assert runs(page)["ads"] == 0  # consent-based: waits
        action(page, "reject_all")
        objection = recorded(page)
        assert objection["choices"]["analytics"] is False

        change_purposes(gateway, toml)
        age_memory(page, 200)  # past the 6 months after a refusal

        visit(page, site, gateway, "/w1-uk", "GB", accept_language="en-GB,en;q=0.9")
        settled(page)
        expect(page.locator(BANNER)).to_be_visible()
        page.wait_for_timeout(300)
        assert runs(page) == {"inline": 0, "analytics": 0, "ads": 0, "frame": 0}
        updates = consent_updates(page)
        assert updates and all(u["analytics_storage"] == "denied" for u in updates)
        # The preferences panel shows the objection, not the default.
        action(page, "settings")
        expect(page.locator(PREFS).get_by_role("switch", name="Analytics")).not_to_be_checked()
    finally:
        context.close()


def test_a_lost_cookie_and_copy_come_back_from_the_server(
    browser: Browser, site: LoopbackServer, gateway: Gateway
) -> None:
    """W1: the cookie expires or is cleared; the receipt lets the snippet ask the server, whose
    record of the opt-out is the authority, before any sale/share tag may run."""
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    try:
        visit(page, site, gateway, "/w1-lost", "US-CA")
        action(page, "do_not_sell")
        opted_out = recorded(page)
        stored(gateway, opted_out)
        context.clear_cookies()
        page.evaluate("localStorage.removeItem('cg_state'); localStorage.removeItem('cg_sync')")
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)

        visit(page, site, gateway, "/w1-lost", "US-CA")
        settled(page)
        page.wait_for_timeout(200)
        assert runs(page)["ads"] == 0
        expect(page.locator(BANNER)).to_have_count(0)  # the server's answer is current
        consent = page.evaluate("ConsentGateway.getConsent()")
        assert consent["receipt"]["subject_id"] == opted_out["receipt"]["subject_id"]
        assert consent["choices"]["marketing"] is False
        assert posts == []  # restored, not recorded again
        # The cookie keeps the subject secret (never the id, which opens nothing by itself).
        assert opted_out["receipt"]["secret"] in cookie_value(context)
    finally:
        context.close()


def test_a_refusal_in_the_privacy_center_reaches_the_site(
    browser: Browser, site: LoopbackServer, gateway: Gateway
) -> None:
    """W1: the privacy center records on the gateway's origin, not in the site's cookie; after a
    visit there the snippet asks the server, so the opt-out given there applies on the site."""
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    try:
        visit(page, site, gateway, "/w1-center", "US-CA")
        action(page, "ok")
        accepted = recorded(page)
        page.wait_for_function("window.adsRuns === 1")
        stored(gateway, accepted)
        mine = accepted["receipt"]
        # The site links to the privacy center with the subject's id and secret (in the
        # fragment, which no server sees); the visitor follows the link.
        page.evaluate(
            """url => { const a = document.createElement('a'); a.id = 'center';
            a.href = url; a.textContent = 'Privacy center'; document.body.append(a); }""",
            f"{gateway.origin}/v1/sites/demo/privacy-center?region=US-CA"
            f"#subject={mine['subject_id']}&secret={mine['secret']}",
        )
        page.click("#center")
        page.wait_for_url(re.compile(r".*/privacy-center.*"))
        marketing = page.locator('input[name="marketing"]')
        expect(marketing).to_be_checked()
        marketing.uncheck()
        page.get_by_role("button", name="Save choices").click()
        expect(page.locator("#status")).to_have_text("Your choices have been saved.")
        stored(gateway, accepted, count=2)

        visit(page, site, gateway, "/w1-center", "US-CA")
        settled(page)
        page.wait_for_timeout(200)
        assert runs(page)["ads"] == 0
        assert page.evaluate("ConsentGateway.getConsent().choices.marketing") is False
        assert consent_updates(page)[-1]["ad_storage"] == "denied"
    finally:
        context.close()


def gpc_context(browser: Browser, locale: str) -> BrowserContext:
    context = browser.new_context(locale=locale)
    context.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})"
    )
    return context


@pytest.mark.parametrize(
    ("accept", "text"),
    [
        ("en-US,en;q=0.9", "Opt-out preference signal honoured"),
        ("es-US,es;q=0.9", "Señal de preferencia de exclusión respetada"),
    ],
)
def test_returning_gpc_visitors_see_that_the_signal_was_honoured(
    browser: Browser, site: LoopbackServer, gateway: Gateway, accept: str, text: str
) -> None:
    """W12, 11 CCR 7025(c)(6) (mandatory since 1 Jan 2026): display whether the opt-out
    preference signal was processed, on every page, not only in a banner shown once."""
    context = gpc_context(browser, accept.split(",")[0])
    page = context.new_page()
    try:
        path = f"/w12-{accept[:2]}"
        visit(page, site, gateway, path, "US-CA", accept_language=accept)
        banner = page.locator(BANNER)
        expect(banner.locator("[data-cg-gpc]")).to_have_text(text)
        expect(page.locator("#cg-host .cg-badge")).to_have_count(0)  # the banner says it
        signalled = recorded(page)
        assert signalled["action"] == "gpc"
        action(page, "ok")
        recorded_anew(page, signalled)

        visit(page, site, gateway, path, "US-CA", accept_language=accept)
        settled(page)
        expect(page.locator(BANNER)).to_have_count(0)
        badge = page.locator("#cg-host .cg-badge")
        expect(badge).to_have_text(text)
        expect(badge).to_be_visible()
        assert runs(page)["ads"] == 0
        # On the next page too: the display persists.
        page.reload()
        expect(page.locator("#cg-host .cg-badge")).to_have_text(text)
    finally:
        context.close()


def test_pipl_accept_all_never_grants_a_separate_consent(
    page: Page, site: LoopbackServer, gateway: Gateway
) -> None:
    """PIPL Arts. 23 and 39: provision to another processor or abroad needs a separate consent,
    never bundled into "accept all"; each is given by its own switch."""
    visit(page, site, gateway, "/pipl", "CN", accept_language="en-US,en;q=0.9")
    banner = page.locator(BANNER)
    expect(banner.locator(".cg-note")).to_have_text(
        "Marketing: This purpose needs your separate consent."
    )
    action(page, "accept_all")
    consent = recorded(page)
    assert consent["choices"] == {
        "necessary": True,
        "analytics": True,
        "marketing": False,
        "personalization": True,
    }
    [record] = stored(gateway, consent)
    assert record["action"] == "custom"  # not an accept_all: the separate purpose is off
    assert record["choices"]["marketing"] is False
    page.wait_for_function("window.analyticsRuns === 1")
    assert runs(page)["ads"] == 0

    # Its own switch, its own act.
    page.click("[data-cg-open]")
    action(page, "settings")
    page.locator(PREFS).get_by_role("switch", name="Marketing").check()
    action(page, "accept_all")  # the switch stays as the visitor set it
    page.wait_for_function("window.adsRuns === 1")
    history = stored(gateway, recorded_anew(page, consent), count=2)
    assert history[-1]["action"] == "custom"
    assert history[-1]["choices"]["marketing"] is True


def test_pipl_separate_consent_in_the_privacy_center(page: Page, gateway: Gateway) -> None:
    """The privacy center records each separate consent as its own choice, never as
    accept_all (which the server refuses to carry a separate purpose)."""
    config: dict[str, Any] = gateway.get_json("/v1/sites/demo/config?region=CN")
    secret = "b" * 32
    body = {
        "subject_secret": secret,
        "banner_version": config["banner_version"],
        "action": "reject_all",
        "channel": "app",
        "choices": {p["id"]: False for p in config["purposes"] if not p["essential"]},
    }
    request = urllib.request.Request(
        gateway.origin + "/v1/sites/demo/consents",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        answer = json.load(response)
    receipt, subject = answer["receipt"], answer["subject_id"]
    gateway.consents(subject, receipt, 1)
    page.goto(
        f"{gateway.origin}/v1/sites/demo/privacy-center?region=CN#subject={subject}&secret={secret}"
    )
    expect(page.locator("#history tbody tr")).to_have_count(1)
    for box in page.locator("#choices input[name]").all():
        box.check()
    page.get_by_role("button", name="Save choices").click()
    expect(page.locator("#status")).to_have_text("Your choices have been saved.")
    latest = gateway.consents(subject, receipt, 2)[-1]
    assert latest["action"] == "custom"
    assert all(latest["choices"].values())


def test_a_known_minor_is_never_offered_a_prohibited_purpose(
    page: Page, site: LoopbackServer, gateway: Gateway
) -> None:
    """The site's age signal (`consent.js?age=15`): Maryland bans selling a known minor's data and
    targeted advertising to them (Md. Com. Law 14-4607(a)(4)-(5)); no banner or panel offers such a
    purpose and no choice turns it on."""
    page.route(
        gateway.origin + "/**",
        lambda route: route.continue_(
            headers={**route.request.headers, "cf-ipcountry": "US", "cf-region-code": "MD"}
        ),
    )
    page.goto(demo_page(site, gateway.script_url(age="15"), path="/minor"))
    expect(page.locator(BANNER)).to_be_visible()
    assert page.evaluate("ConsentGateway.config.purposes.find(p => p.id == 'marketing').prohibited")
    page.wait_for_function("window.analyticsRuns === 1")
    assert runs(page)["ads"] == 0  # off before any choice, unlike for an adult here
    action(page, "settings")
    panel = page.locator(PREFS)
    expect(panel.get_by_role("switch", name="Analytics")).to_be_visible()
    expect(panel.get_by_role("switch", name="Marketing")).to_have_count(0)
    action(page, "save")
    consent = recorded(page)
    assert consent["choices"]["marketing"] is False
    [record] = stored(gateway, consent)
    assert record["choices"]["marketing"] is False
    page.wait_for_timeout(200)
    assert runs(page)["ads"] == 0
    assert consent_updates(page)[-1]["ad_personalization"] == "denied"


def test_gpc_is_an_objection_to_uk_exempt_statistics(
    browser: Browser, site: LoopbackServer, gateway: Gateway
) -> None:
    """W16: under the UK rule a browser's GPC signal objects to the statistics that would run
    on the PECR Sch. A1 exemption; they never start, and the banner says it was honoured."""
    context = gpc_context(browser, "en-GB")
    page = context.new_page()
    try:
        visit(page, site, gateway, "/w16", "GB", accept_language="en-GB,en;q=0.9")
        expect(page.locator(BANNER).locator("[data-cg-gpc]")).to_be_visible()
        consent = recorded(page)
        assert consent["choices"]["analytics"] is False
        [record] = stored(gateway, consent)
        assert (record["action"], record["rule_id"]) == ("gpc", "uk")
        page.wait_for_timeout(200)
        assert runs(page) == {"inline": 0, "analytics": 0, "ads": 0, "frame": 0}
        assert consent_updates(page)[-1]["analytics_storage"] == "denied"
    finally:
        context.close()
