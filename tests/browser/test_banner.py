"""The snippet in Chromium: banner per rule, records, blocking, signals, keyboard, a11y, layout."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Route, expect

from tests.browser.harness import NONCE, Gateway, demo_page, inject_axe
from tests.browser.servers import LoopbackServer

pytestmark = pytest.mark.browser

BANNER = "#cg-host section[data-cg-layer=banner]"
PREFS = "#cg-host section[data-cg-layer=preferences]"


def cdn_headers(region: str) -> dict[str, str]:
    country, _, subdivision = region.partition("-")
    return {"cf-ipcountry": country, **({"cf-region-code": subdivision} if subdivision else {})}


def visit(
    page: Page,
    site: LoopbackServer,
    gateway: Gateway,
    path: str,
    region: str = "DE",
    accept_language: str = "en-US,en;q=0.9",
    **page_options: Any,
) -> None:
    """Open a test page as a visitor from ``region``, located by CDN headers (trusted peer)."""
    added = {**cdn_headers(region), "accept-language": accept_language}

    # Headers added on the way, as a CDN would: set from the page they would make the POST a
    # non-simple CORS request. (Chromium drops an injected Sec-GPC, and has no GPC of its own,
    # so GPC reaches the snippet through navigator.globalPrivacyControl only.)
    def through_cdn(route: Route) -> None:
        route.continue_(headers={**route.request.headers, **added})

    page.route(gateway.origin + "/**", through_cdn)
    page.goto(demo_page(site, gateway.script_url(), path=path, **page_options))


def action(page: Page, name: str) -> None:
    page.locator(f"#cg-host [data-cg-action={name}]").first.click()


def recorded(page: Page) -> dict[str, Any]:
    """Wait until the gateway answered the last choice; returns getConsent()."""
    page.wait_for_function(
        "(() => { const c = ConsentGateway.getConsent();"
        " return c && c.receipt && c.receipt.record_id; })()"
    )
    consent: dict[str, Any] = page.evaluate("ConsentGateway.getConsent()")
    return consent


def stored(gateway: Gateway, consent: dict[str, Any], count: int = 1) -> list[dict[str, Any]]:
    """The subject's records as the gateway's store holds them, read with the receipt."""
    return gateway.consents(consent["receipt"]["subject_id"], consent["receipt"]["receipt"], count)


def data_layer(page: Page) -> list[Any]:
    """dataLayer with gtag's `arguments` objects turned into lists."""
    layer: list[Any] = page.evaluate(
        "dataLayer.map(e => (Object.prototype.toString.call(e) === '[object Arguments]')"
        " ? Array.from(e) : e)"
    )
    return layer


def runs(page: Page) -> dict[str, int]:
    counts: dict[str, int] = page.evaluate(
        "({inline: window.inlineAnalyticsRuns || 0, analytics: window.analyticsRuns || 0,"
        "  ads: window.adsRuns || 0,"
        "  frame: document.querySelector('iframe').src.endsWith('/frame.html') ? 1 : 0})"
    )
    return counts


def test_opt_in_accept_records_unblocks_and_signals(
    page: Page, site: LoopbackServer, gateway: Gateway
) -> None:
    posts: list[Request] = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" else None)
    visit(page, site, gateway, "/accept", "DE")
    banner = page.locator(BANNER)
    expect(banner).to_be_visible()
    assert banner.get_attribute("role") == "dialog"
    assert banner.get_attribute("aria-modal") == "true"
    assert banner.get_attribute("lang") == "en"
    # Silence is refusal: nothing non-essential ran, and Consent Mode starts denied and waiting.
    assert runs(page) == {"inline": 0, "analytics": 0, "ads": 0, "frame": 0}
    first = data_layer(page)[0]
    assert first[:2] == ["consent", "default"]
    assert first[2]["analytics_storage"] == "denied"
    assert first[2]["ad_user_data"] == "denied"
    assert first[2]["wait_for_update"] == 500

    action(page, "accept_all")
    consent = recorded(page)
    expect(banner).to_be_hidden()
    assert consent["choices"] == {
        "necessary": True,
        "analytics": True,
        "marketing": True,
        "personalization": True,
    }
    page.wait_for_function("window.adsRuns === 1 && window.analyticsRuns === 1")
    # The inline tag kept its CSP nonce (it would be refused without it) and ran exactly once.
    assert runs(page) == {"inline": 1, "analytics": 1, "ads": 1, "frame": 1}
    update = [e for e in data_layer(page) if isinstance(e, list) and e[1] == "update"]
    assert update == [
        [
            "consent",
            "update",
            {
                "security_storage": "granted",
                "functionality_storage": "granted",
                "analytics_storage": "granted",
                "ad_storage": "granted",
                "ad_user_data": "granted",
                "ad_personalization": "granted",
                "personalization_storage": "granted",
            },
        ]
    ]
    assert any(
        isinstance(e, dict)
        and e.get("event") == "cg_consent_update"
        and e["cg_action"] == "accept_all"
        for e in data_layer(page)
    )

    [record] = stored(gateway, consent)
    assert record["action"] == "accept_all"
    assert record["choices"] == {
        "necessary": True,
        "analytics": True,
        "marketing": True,
        "personalization": True,
    }
    assert record["channel"] == "web"
    assert record["banner_version"] == page.evaluate("ConsentGateway.config.banner_version")
    # The subject API never shows the visit (page, device, network) to a credential holder.
    assert not {"page_url", "user_agent", "ip_truncated"} & set(record)
    assert record["origin"] == site.origin  # a cross-origin POST from the publisher's page
    assert record["rule_id"] == "gdpr"
    [post] = posts
    assert post.headers["content-type"].startswith("text/plain")  # simple request: no preflight

    # The next page: no banner, no request to record, and Consent Mode updated again at once.
    page.reload()
    page.wait_for_function("window.ConsentGateway && window.adsRuns === 1")
    expect(page.locator(BANNER)).to_have_count(0)
    layer = data_layer(page)
    assert [e[1] for e in layer if isinstance(e, list)] == ["default", "update"]
    assert len(posts) == 1
    cookie = next(c for c in page.context.cookies() if c["name"] == "cg_consent")
    assert cookie["sameSite"] == "Lax"
    assert len(cookie["value"]) < 120


def test_opt_in_reject_records_and_keeps_tags_inert(
    page: Page, site: LoopbackServer, gateway: Gateway
) -> None:
    visit(page, site, gateway, "/reject", "DE")
    action(page, "reject_all")
    consent = recorded(page)
    assert consent["choices"]["analytics"] is False
    assert consent["choices"]["necessary"] is True
    [record] = stored(gateway, consent)
    assert record["action"] == "reject_all"
    assert record["choices"] == {
        "necessary": True,
        "analytics": False,
        "marketing": False,
        "personalization": False,
    }
    page.wait_for_timeout(100)
    assert runs(page) == {"inline": 0, "analytics": 0, "ads": 0, "frame": 0}
    assert data_layer(page)[-2][2]["analytics_storage"] == "denied"


def test_custom_choice_in_the_preferences_panel(
    page: Page, site: LoopbackServer, gateway: Gateway
) -> None:
    visit(page, site, gateway, "/custom", "DE")
    # The panel is built lazily: not in the DOM until asked for.
    expect(page.locator(PREFS)).to_have_count(0)
    action(page, "settings")
    panel = page.locator(PREFS)
    expect(panel).to_be_visible()
    switches = panel.get_by_role("switch")
    expect(switches).to_have_count(3)
    for switch in switches.all():
        expect(switch).not_to_be_checked()  # nothing pre-ticked
    panel.get_by_role("switch", name="Analytics").check()
    action(page, "save")
    consent = recorded(page)
    [record] = stored(gateway, consent)
    assert record["action"] == "custom"
    assert record["choices"] == {
        "necessary": True,
        "analytics": True,
        "marketing": False,
        "personalization": False,
    }
    page.wait_for_function("window.analyticsRuns === 1")
    assert runs(page) == {"inline": 1, "analytics": 1, "ads": 0, "frame": 0}
    # A marketing tag added later stays inert; an analytics one runs at once (MutationObserver).
    page.evaluate(
        """nonce => {
        for (const [cat, name] of [['marketing', 'lateAds'], ['analytics', 'lateAnalytics']]) {
          const s = document.createElement('script');
          s.type = 'text/plain'; s.dataset.category = cat; s.nonce = nonce;
          s.text = 'window.' + name + ' = true';
          document.body.append(s);
        }}""",
        NONCE,
    )
    page.wait_for_function("window.lateAnalytics === true")
    assert page.evaluate("window.lateAds") is None
    # The persistent link reopens the panel with the saved state; changes fire "change".
    page.evaluate(
        "ConsentGateway.on('change', c => { window.changes = (window.changes||[])"
        ".concat([c.choices]); })"
    )
    page.click("[data-cg-open]")
    expect(page.locator(BANNER)).to_be_visible()
    action(page, "settings")
    expect(page.locator(PREFS).get_by_role("switch", name="Analytics")).to_be_checked()
    page.locator(PREFS).get_by_role("switch", name="Personalisation").check()
    action(page, "save")
    page.wait_for_function("window.changes && window.changes.length === 1")
    assert page.evaluate("window.changes[0].personalization") is True


def test_withdrawal_deletes_the_purpose_cookies_and_reloads(
    page: Page, site: LoopbackServer, gateway: Gateway
) -> None:
    visit(page, site, gateway, "/withdraw", "DE")
    action(page, "accept_all")
    first = recorded(page)
    page.evaluate(
        "document.cookie = '_ga=GA1.1; path=/'; document.cookie = '_ga_XYZ=1; path=/';"
        "document.cookie = 'pref_theme=dark; path=/'; document.cookie = 'keep=1; path=/'"
    )
    page.click("[data-cg-open]")
    with page.expect_navigation():
        action(page, "reject_all")
    page.wait_for_function("window.ConsentGateway")
    names = {c["name"] for c in page.context.cookies()}
    assert {"_ga", "_ga_XYZ", "pref_theme"}.isdisjoint(names)
    assert {"keep", "cg_consent"} <= names
    assert runs(page)["analytics"] == 0  # reloaded: the withdrawn tags are gone
    accepted, withdrawn = stored(gateway, recorded(page), count=2)
    assert (accepted["action"], withdrawn["action"]) == ("accept_all", "withdraw")
    assert withdrawn["withdraws"] == first["receipt"]["record_id"]
    assert withdrawn["subject_id"] == first["receipt"]["subject_id"]


def test_changed_revision_reprompts_and_keeps_the_subject(
    page: Page, site: LoopbackServer, gateway: Gateway
) -> None:
    url = demo_page(site, gateway.script_url(region="DE"), path="/revision")
    page.goto(url)
    action(page, "accept_all")
    subject = recorded(page)["receipt"]["subject_id"]
    # What is consented to changed since: the stored revision no longer matches the config's.
    # (Without its receipt this browser cannot ask the server, whose record would say otherwise;
    # tests/browser/test_refusals.py changes the site itself.)
    page.evaluate(
        "document.cookie = document.cookie.match(/cg_consent=([^;]*)/)[1]"
        ".replace(/^(v\\d)\\|[^|]*/, 'cg_consent=$1|0ld') + '; path=/';"
        "localStorage.removeItem('cg_state'); localStorage.removeItem('cg_receipt')"
    )
    page.goto(url)
    expect(page.locator(BANNER)).to_be_visible()
    assert page.evaluate("ConsentGateway.getConsent()") is None
    assert runs(page)["analytics"] == 0
    action(page, "reject_all")
    assert recorded(page)["receipt"]["subject_id"] == subject


def test_offline_choice_is_queued_and_sent_when_back_online(
    context: BrowserContext, page: Page, site: LoopbackServer, gateway: Gateway
) -> None:
    visit(page, site, gateway, "/offline", "DE")
    expect(page.locator(BANNER)).to_be_visible()
    context.set_offline(True)
    action(page, "accept_all")
    page.wait_for_timeout(200)
    queued = json.loads(page.evaluate("localStorage.getItem('cg_queue')"))
    assert [q["action"] for q in queued] == ["accept_all"]
    # Counted before it went: the next send says it is a retry (store_retries.py).
    assert [q["attempt"] for q in queued] == [1]
    context.set_offline(False)
    [record] = stored(gateway, recorded(page))
    assert record["action"] == "accept_all"
    assert page.evaluate("localStorage.getItem('cg_queue')") == "[]"


def test_gpc_opts_out_automatically_in_an_opt_out_region(
    browser: Browser, site: LoopbackServer, gateway: Gateway
) -> None:
    context = browser.new_context()
    context.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})"
    )
    page = context.new_page()
    try:
        visit(page, site, gateway, "/gpc", "US-CA")
        banner = page.locator(BANNER)
        expect(banner).to_be_visible()
        assert banner.get_attribute("role") == "region"  # a notice, not a blocking dialog
        expect(banner.locator("[data-cg-gpc]")).to_be_visible()
        expect(
            banner.get_by_role("button", name="Do Not Sell or Share My Personal Information")
        ).to_be_visible()
        consent = recorded(page)
        assert consent["gpc"] is True
        [record] = stored(gateway, consent)
        assert record["action"] == "gpc"
        assert record["rule_id"] == "ccpa"
        assert record["choices"] == {
            "necessary": True,
            "analytics": True,
            "marketing": False,
            "personalization": True,
        }
        page.wait_for_function("window.analyticsRuns === 1")
        assert runs(page)["ads"] == 0
        modes = [e[2] for e in data_layer(page) if isinstance(e, list)]
        assert modes[-1]["ad_storage"] == "denied"
        assert modes[-1]["analytics_storage"] == "granted"
    finally:
        context.close()


def test_keyboard_only_through_banner_and_panel(
    page: Page, site: LoopbackServer, gateway: Gateway
) -> None:
    visit(page, site, gateway, "/keys", "DE")
    expect(page.locator(BANNER)).to_be_focused()
    focused = (
        "document.activeElement.shadowRoot ? "
        "document.activeElement.shadowRoot.activeElement.textContent : "
        "document.activeElement.textContent"
    )
    order = []
    for _ in range(5):
        page.keyboard.press("Tab")
        order.append(page.evaluate(focused))
    # Privacy policy, Accept, Reject, Customize, then the trap wraps to the first control.
    assert order == ["Privacy policy", "Accept all", "Reject all", "Customize", "Privacy policy"]
    page.keyboard.press("Shift+Tab")
    assert page.evaluate(focused) == "Customize"
    # A visible focus indicator on the focused control.
    outline = page.evaluate(
        "getComputedStyle(document.activeElement.shadowRoot.activeElement).outlineStyle"
    )
    assert outline == "solid"
    page.keyboard.press("Enter")
    expect(page.locator(PREFS)).to_be_focused()
    page.keyboard.press("Tab")  # the close button
    page.keyboard.press("Tab")  # Analytics switch
    assert page.evaluate(focused) == ""
    page.keyboard.press("Space")
    expect(page.locator(PREFS).get_by_role("switch", name="Analytics")).to_be_checked()
    page.keyboard.press("Escape")  # back to the first layer, no choice made
    expect(page.locator(BANNER)).to_be_visible()
    expect(page.locator(PREFS)).to_have_count(0)
    page.keyboard.press("Escape")  # dismiss: silence is refusal, nothing recorded
    expect(page.locator(BANNER)).to_have_count(0)
    assert page.evaluate("ConsentGateway.getConsent()") is None
    # Reopen from the persistent link by keyboard; focus returns to the link afterwards.
    page.focus("[data-cg-open]")
    page.keyboard.press("Enter")
    expect(page.locator(BANNER)).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "Reject all"
    page.keyboard.press("Enter")
    assert recorded(page)["action"] == "reject_all"
    assert page.evaluate("document.activeElement.hasAttribute('data-cg-open')") is True


@pytest.mark.parametrize(
    ("rule", "open_panel"), [("DE", False), ("DE", True), ("US-CA", False), ("AU", True)]
)
def test_axe_finds_no_serious_violations(
    browser: Browser, site: LoopbackServer, gateway: Gateway, rule: str, open_panel: bool
) -> None:
    context = browser.new_context(bypass_csp=True)  # to inject axe-core
    page = context.new_page()
    try:
        visit(page, site, gateway, f"/axe-{rule}", rule)
        expect(page.locator(BANNER)).to_be_visible()
        if open_panel:
            action(page, "settings")
            expect(page.locator(PREFS)).to_be_visible()
        inject_axe(page)
        result = page.evaluate("""async () => {
            const r = await axe.run({include: [['#cg-host']]},
                                    {runOnly: ['wcag2a', 'wcag2aa', 'wcag21aa', 'wcag22aa',
                                               'best-practice']});
            return {passes: r.passes.length,
                    bad: r.violations.filter(v => ['serious', 'critical'].includes(v.impact))
                          .map(v => v.id + ': ' + v.nodes.map(n => n.target).join(' '))};
        }""")
        assert result["bad"] == []
        assert result["passes"] > 5  # it really inspected the shadow tree
    finally:
        context.close()


def test_no_layout_shift_and_reduced_motion(
    browser: Browser, site: LoopbackServer, gateway: Gateway
) -> None:
    context = browser.new_context(reduced_motion="reduce")
    page = context.new_page()
    try:
        visit(page, site, gateway, "/cls", "US-CA")
        expect(page.locator(BANNER)).to_be_visible()
        page.wait_for_timeout(300)
        shift = page.evaluate("""() => new Promise(resolve => {
            let total = 0;
            new PerformanceObserver(list => {
              for (const e of list.getEntries()) total += e.value;
            }).observe({type: 'layout-shift', buffered: true});
            setTimeout(() => resolve(total), 100);
        })""")
        assert shift == 0
        animation = page.evaluate(
            "getComputedStyle(document.querySelector('#cg-host').shadowRoot"
            ".querySelector('section')).animationName"
        )
        assert animation == "none"
    finally:
        context.close()


def test_idempotent_init_and_api_events(page: Page, site: LoopbackServer, gateway: Gateway) -> None:
    url = gateway.script_url(region="AU")
    page.goto(
        demo_page(
            site,
            url,
            path="/twice",
            extra_body=(f'<script nonce="{NONCE}" src="{url}" async></script>'),
        )
    )
    expect(page.locator(BANNER)).to_be_visible()
    page.wait_for_load_state("load")
    assert page.locator("#cg-host").count() == 1
    defaults = [e for e in data_layer(page) if isinstance(e, list) and e[1] == "default"]
    assert len(defaults) == 1
    page.evaluate("addEventListener('cg:change', e => { window.evt = e.detail.action; })")
    action(page, "ok")
    assert recorded(page)["action"] == "accept_all"
    assert page.evaluate("window.evt") == "accept_all"
    page.evaluate("ConsentGateway.showPreferences()")
    expect(page.locator(PREFS)).to_be_visible()


LOCATIONS = [
    # Accept-Language, region, served language, direction, rule, first layer role
    ("de-DE,de;q=0.9,en;q=0.5", "DE", "de", "ltr", "gdpr", "dialog"),
    ("fr-CA,fr;q=0.9", "CA-QC", "fr", "ltr", "quebec", "dialog"),
    ("en-US,en;q=0.9", "US-CA", "en", "ltr", "ccpa", "region"),
    ("ar-EG,ar;q=0.9", "EG", "ar", "rtl", "default", "dialog"),
    ("zh-TW,zh;q=0.9", "CN", "zh-Hant", "ltr", "pipl", "dialog"),
    ("ja-JP,ja;q=0.9", "JP", "ja", "ltr", "appi", "region"),
    ("pt-BR,pt;q=0.9", "BR", "pt-BR", "ltr", "lgpd", "dialog"),
]


@pytest.mark.parametrize(("accept", "region", "language", "direction", "rule", "role"), LOCATIONS)
def test_language_and_rule_follow_the_visitor(
    page: Page,
    site: LoopbackServer,
    gateway: Gateway,
    accept: str,
    region: str,
    language: str,
    direction: str,
    rule: str,
    role: str,
) -> None:
    visit(page, site, gateway, f"/where-{region}", region, accept_language=accept)
    banner = page.locator(BANNER)
    expect(banner).to_be_visible()
    assert banner.get_attribute("lang") == language
    assert banner.get_attribute("dir") == direction
    assert banner.get_attribute("role") == role
    assert page.evaluate("ConsentGateway.config.rule.id") == rule
    # The banner shows the same translated title that the JSON config gives an app.
    config = gateway.get_json(
        "/v1/sites/demo/config", {**cdn_headers(region), "Accept-Language": accept}
    )
    assert banner.locator("h2").inner_text() == config["texts"]["title"]
    assert (config["texts"]["title"] == "We value your privacy") == (language == "en")


def test_rtl_and_theme(page: Page, site: LoopbackServer, gateway: Gateway) -> None:
    page.goto(demo_page(site, gateway.script_url(region="DE", lang="ar"), path="/rtl", lang="ar"))
    banner = page.locator(BANNER)
    expect(banner).to_be_visible()
    assert banner.get_attribute("dir") == "rtl"
    assert banner.get_attribute("lang") == "ar"
    assert banner.evaluate("e => getComputedStyle(e).direction") == "rtl"


def test_dark_mode_and_site_theme(browser: Browser, site: LoopbackServer, gateway: Gateway) -> None:
    context = browser.new_context(color_scheme="dark", bypass_csp=True)  # for add_style_tag
    page = context.new_page()
    try:
        visit(page, site, gateway, "/dark", "US-CA")
        banner = page.locator(BANNER)
        expect(banner).to_be_visible()
        assert banner.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(30, 31, 34)"
        # A site theme is CSS custom properties on the host, which the shadow styles read.
        page.evaluate("document.querySelector('#cg-host').style.setProperty('--cg-bg', '#123456')")
        assert banner.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(18, 52, 86)"
        # The page's own styles do not leak in: a hostile global rule leaves the banner alone.
        page.add_style_tag(content="section, button { display: none !important; }")
        expect(banner.get_by_role("button", name="OK")).to_be_visible()
    finally:
        context.close()


def test_usable_at_200_percent_zoom(
    browser: Browser, site: LoopbackServer, gateway: Gateway
) -> None:
    # 200 % zoom of a 1280 x 800 window leaves a 640 x 400 CSS-pixel viewport.
    context = browser.new_context(viewport={"width": 640, "height": 400})
    page = context.new_page()
    try:
        visit(page, site, gateway, "/zoom", "DE")
        action(page, "settings")
        panel = page.locator(PREFS)
        expect(panel).to_be_visible()
        box = panel.bounding_box()
        assert box is not None
        assert box["y"] >= 0
        assert box["y"] + box["height"] <= 400  # scrolls inside itself, never off-screen
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 640
        # The last control is reachable (scrolled into view inside the panel) and works.
        action(page, "save")
        assert recorded(page)["action"] == "reject_all"
    finally:
        context.close()


def test_returning_visitor_with_a_blocking_snippet_runs_each_tag_once(
    page: Page, site: LoopbackServer, gateway: Gateway
) -> None:
    # A synchronous tag in <head> runs before the blocked tags are parsed: the observer catches
    # them as the parser adds them, and each runs exactly once.
    visit(page, site, gateway, "/sync", "DE", loading="")
    expect(page.locator(BANNER)).to_be_visible()
    action(page, "accept_all")
    recorded(page)
    page.reload()
    page.wait_for_load_state("load")
    page.wait_for_function("window.adsRuns === 1 && window.analyticsRuns === 1")
    assert runs(page) == {"inline": 1, "analytics": 1, "ads": 1, "frame": 1}
    expect(page.locator(BANNER)).to_have_count(0)
