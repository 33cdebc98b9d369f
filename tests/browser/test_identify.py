"""A customer's choice follows their identity to a second device (issue 12, "Show"): accepted
on device A, the site's backend links their e-mail and gives device B an identity token; B's
snippet presents it with ConsentGateway.identify(token) and shows no banner, the same choices,
and runs the tags the customer allowed, on that page and the next. A token is single-use, so a
page that replays one another page was given gets nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.harness import Gateway, run_gateway
from tests.browser.servers import LoopbackServer
from tests.browser.test_banner import PREFS, action, recorded, stored, visit
from tests.helpers import ROOT

pytestmark = pytest.mark.browser
EMAIL = {"type": "email", "value": "ann@example.com"}


def create_key(work: Path) -> str:
    """`consent-gateway keys create` in the gateway's data dir, as an operator runs it."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "consent-gateway"), "keys", "create", "demo",
         "--name", "crm", "--scope", "identities:write", "--banners-dir", str(ROOT / "banners")],
        env={**os.environ, "GATEWAY_DATA_DIR": str(work / "data")},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture
def keyed(site: LoopbackServer, tmp_path: Path) -> Iterator[tuple[Gateway, str]]:
    key = create_key(tmp_path)
    with run_gateway(site.origin, tmp_path) as gw:
        yield gw, key


def backend(gateway: Gateway, key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The site's backend calling the gateway with its API key."""
    request = urllib.request.Request(
        gateway.origin + "/v1/sites/demo" + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 201
        result: dict[str, Any] = json.loads(answer.read())
        return result


def identify(page: Page, token: str) -> dict[str, Any]:
    answer: dict[str, Any] = page.evaluate("t => ConsentGateway.identify(t)", token)
    return answer


def banner_shown(page: Page) -> bool:
    shown: bool = page.evaluate(
        "(() => { const h = document.getElementById('cg-host');"
        " const b = h && h.shadowRoot && h.shadowRoot.querySelector('[role=dialog],[role=region]');"
        " return !!(b && b.offsetParent !== null); })()"
    )
    return shown


def test_device_b_presenting_the_identity_token_gets_the_customers_choices_and_no_banner(
    browser: Browser, site: LoopbackServer, keyed: tuple[Gateway, str]
) -> None:
    gateway, key = keyed
    device_a = browser.new_context(locale="en-US")
    device_b = browser.new_context(locale="en-US")
    try:
        a = device_a.new_page()
        visit(a, site, gateway, "/identify", "DE")
        action(a, "settings")  # a custom choice: analytics yes, marketing no
        a.locator(PREFS).get_by_role("switch", name="Analytics").check()
        action(a, "save")
        consent = recorded(a)
        stored(gateway, consent)
        subject_a = consent["receipt"]["subject_id"]
        backend(gateway, key, f"/subjects/{subject_a}/identities", EMAIL)
        token = backend(gateway, key, "/identity-tokens", {"identities": [EMAIL]})["token"]

        b = device_b.new_page()
        visit(b, site, gateway, "/identify", "DE")
        b.wait_for_function("document.getElementById('cg-host')")
        assert b.evaluate("ConsentGateway.getConsent()") is None
        answer = identify(b, token)
        assert answer["identities"] == ["email"]
        assert answer["subject_id"] != subject_a  # B keeps its own subject, now linked
        choices = b.evaluate("ConsentGateway.getConsent().choices")
        assert choices == consent["choices"]
        assert choices["analytics"] is True and choices["marketing"] is False
        b.wait_for_function("window.analyticsRuns === 1")
        assert not banner_shown(b)

        # The next page on device B: no banner, the customer's choices, only allowed tags.
        visit(b, site, gateway, "/identify", "DE")
        b.wait_for_function("window.analyticsRuns === 1")
        b.wait_for_timeout(300)
        assert b.evaluate("window.adsRuns || 0") == 0
        assert not banner_shown(b)
        assert b.evaluate("ConsentGateway.getConsent().choices") == consent["choices"]

        # The token was single-use: a third browser replaying it gets nothing.
        c = browser.new_context(locale="en-US")
        try:
            page = c.new_page()
            visit(page, site, gateway, "/identify", "DE")
            page.wait_for_function("document.getElementById('cg-host')")
            with pytest.raises(Exception, match="403"):
                identify(page, token)
            assert page.evaluate("ConsentGateway.getConsent()") is None
        finally:
            c.close()
    finally:
        device_a.close()
        device_b.close()


def test_an_unknown_token_changes_nothing(
    browser: Browser, site: LoopbackServer, gateway: Gateway
) -> None:
    context = browser.new_context(locale="en-US")
    try:
        page = context.new_page()
        visit(page, site, gateway, "/identify", "DE")
        page.wait_for_function("document.getElementById('cg-host')")
        with pytest.raises(Exception, match="40"):
            identify(page, "it1.forged.token")
        assert page.evaluate("ConsentGateway.getConsent()") is None
    finally:
        context.close()
