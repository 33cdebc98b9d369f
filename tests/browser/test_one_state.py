"""One state everywhere (issue 12 item 7): the snippet reconciles its cookie with the subject's
state on the server, with one conditional request when the cookie may be stale and none on a
page view in between; a withdrawal made by another channel stops the tags on the next page."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Response

from tests.browser.harness import Gateway, demo_page, run_gateway
from tests.browser.servers import LoopbackServer
from tests.browser.test_banner import action, recorded, runs, stored, visit

pytestmark = pytest.mark.browser


def subject_requests(page: Page) -> list[Response]:
    """The answers to the snippet's state checks on this page (collected as they come)."""
    seen: list[Response] = []
    page.on("response", lambda r: seen.append(r) if "/subjects/" in r.url else None)
    return seen


def settled(page: Page) -> None:
    page.wait_for_function(
        "window.dataLayer && dataLayer.some(e => e && e.event === 'cg_consent_ready')"
    )


def age_check(page: Page, seconds: int) -> None:
    """Move the cookie's last confirmation of the server's state ``seconds`` into the past."""
    page.evaluate(
        """seconds => {
        const v = document.cookie.match(/(?:^|; )cg_consent=([^;]*)/)[1].split('|');
        // Field 8 counts seconds after the choice's time (field 3).
        v[8] = Math.round((Date.now() - seconds * 1000 - parseInt(v[3], 36)) / 1000).toString(36);
        const value = v.join('|');
        document.cookie = 'cg_consent=' + value + '; path=/; max-age=' + 400 * 86400;
        localStorage.setItem('cg_state', JSON.stringify(value));
        }""",
        seconds,
    )


def withdraw_by_api(gateway: Gateway, consent: dict[str, Any]) -> None:
    """The app (another channel) records a withdrawal for the same subject."""
    receipt = consent["receipt"]
    body = {
        "subject_secret": receipt["secret"],
        "banner_version": gateway.get_json("/v1/sites/demo/config")["banner_version"],
        "action": "withdraw",
        "choices": {"analytics": False, "marketing": False, "personalization": False},
        "channel": "app",
        "withdraws": receipt["record_id"],
    }
    request = urllib.request.Request(
        gateway.origin + "/v1/sites/demo/consents",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 201


def test_a_withdrawal_elsewhere_stops_the_tags_after_one_check_and_no_more(
    browser: Browser, site: LoopbackServer, gateway: Gateway
) -> None:
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    try:
        visit(page, site, gateway, "/one-state", "DE")
        action(page, "accept_all")
        accepted = recorded(page)
        page.wait_for_function("window.adsRuns === 1 && window.analyticsRuns === 1")
        stored(gateway, accepted)

        # Nothing changed: the next page view asks nothing and runs the tags at once.
        checks = subject_requests(page)
        visit(page, site, gateway, "/one-state", "DE")
        settled(page)
        page.wait_for_function("window.adsRuns === 1 && window.analyticsRuns === 1")
        assert checks == []

        # The state is older than the check interval, still nothing changed: one 304.
        age_check(page, 3601)
        checks = subject_requests(page)
        visit(page, site, gateway, "/one-state", "DE")
        settled(page)
        page.wait_for_function("window.adsRuns === 1")
        assert [r.status for r in checks] == [304]

        # The app withdraws; within the interval this page does not know yet.
        withdraw_by_api(gateway, accepted)
        stored(gateway, accepted, count=2)
        age_check(page, 3601)
        checks = subject_requests(page)
        visit(page, site, gateway, "/one-state", "DE")
        settled(page)
        page.wait_for_timeout(300)
        assert [r.status for r in checks] == [200]
        assert runs(page) == {"inline": 0, "analytics": 0, "ads": 0, "frame": 0}
        consent = page.evaluate("ConsentGateway.getConsent()")
        assert consent is None or not any(consent["choices"][p] for p in ("analytics", "marketing"))

        # And the page after that asks nothing again, the tags stay blocked.
        checks = subject_requests(page)
        visit(page, site, gateway, "/one-state", "DE")
        settled(page)
        page.wait_for_timeout(300)
        assert checks == []
        assert runs(page)["ads"] == 0
    finally:
        context.close()


@pytest.fixture
def relative_gateway(site: LoopbackServer, tmp_path: Path) -> Iterator[Gateway]:
    """A gateway that knows no public host for the browser's Host: record_url is relative."""
    with run_gateway(site.origin, tmp_path, env={"GATEWAY_PUBLIC_HOSTS": "cdn.example"}) as gw:
        yield gw


def test_a_relative_record_url_is_resolved_against_the_scripts_src(
    page: Page, site: LoopbackServer, relative_gateway: Gateway
) -> None:
    config = relative_gateway.get_json("/v1/sites/demo/config")
    assert config["record_url"] == "/v1/sites/demo/consents"
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.goto(demo_page(site, relative_gateway.script_url(region="DE"), path="/relative"))
    action(page, "settings")  # the panel, a part, comes from the gateway too
    page.locator("#cg-host [data-cg-action=save]").click()
    consent = recorded(page)
    assert posts == [relative_gateway.origin + "/v1/sites/demo/consents"]
    assert consent["receipt"]["record_id"]
