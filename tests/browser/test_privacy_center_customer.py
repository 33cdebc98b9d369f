"""My privacy center for an identified customer, in Chromium: the site's identity token opens the
customer's choices from their other devices, and a rights request is verified by an e-mail code
(a real SMTP server in-process)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import Page, expect

from gateway.cli.keys import create as create_key
from tests.browser.harness import Gateway, run_gateway
from tests.browser.test_privacy_center import CENTER, record
from tests.helpers import make_settings
from tests.procs import free_port
from tests.rights_env import Inbox

pytestmark = pytest.mark.browser


@dataclass
class Served:
    gateway: Gateway
    key: str
    inbox: Inbox

    def call(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.gateway.origin + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def token(self, email: str) -> str:
        answer = self.call(
            "/v1/sites/demo/identity-tokens", {"identities": [{"type": "email", "value": email}]}
        )
        return str(answer["token"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    inbox = Inbox()
    port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    work = tmp_path_factory.mktemp("customer")
    env = {
        "GATEWAY_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "GATEWAY_SMTP_FROM": "privacy@demo.example",
    }
    try:
        with run_gateway("http://127.0.0.1:9", work, env=env) as gateway:
            settings = make_settings(work, banners_dir=work / "banners", data_dir=work / "data")
            # In a thread of its own: Playwright's sync API runs an event loop in this one.
            with ThreadPoolExecutor(1) as pool:
                lines = pool.submit(asyncio.run, create_key(settings, "demo", "crm", [])).result()
            key = lines[-1]
            yield Served(gateway, key, inbox)
    finally:
        smtp.stop()


def test_the_identity_token_opens_the_customers_choices(page: Page, served: Served) -> None:
    # The customer accepted everything in the app (device A), which the CRM linked to them.
    subject_a, receipt_a = record(served.gateway, "f1" * 16)
    served.gateway.consents(subject_a, receipt_a, 1)
    served.call(f"/v1/sites/demo/subjects/{subject_a}/identities",
                {"type": "email", "value": "ann@example.com"})  # fmt: skip
    # The site's backend hands the privacy center a token for the logged-in customer.
    page.goto(f"{served.gateway.origin}{CENTER}?lang=en#token={served.token('ann@example.com')}")
    expect(page.locator("#who-customer")).to_be_visible()
    marketing = page.locator('input[name="marketing"]')
    expect(marketing).to_be_checked()
    marketing.uncheck()
    page.get_by_role("button", name="Save choices").click()
    expect(page.locator("#status")).to_have_text("Your choices have been saved.")
    general = page.locator('form.prefs[data-line=""]')
    general.locator('input[name="channel:email"]').check()
    general.locator('input[name="topic:newsletter"]').check()
    general.get_by_role("button", name="Save contact preferences").click()
    expect(page.locator("#status")).to_have_text("Your contact preferences have been saved.")
    # Marketing automation may now e-mail the newsletter to the customer.
    answer = served.call(
        "/v1/sites/demo/contactability",
        {"channel": "email", "topic": "newsletter",
         "identities": [{"type": "email", "value": "ann@example.com"}]},
    )  # fmt: skip
    assert answer["results"][0]["contact"] is True, answer
    # A third device presenting the customer's token gets the choice made in the center.
    secret_c = "f3" * 16
    request = urllib.request.Request(
        served.gateway.origin + "/v1/sites/demo/identify",
        data=json.dumps(
            {"subject_secret": secret_c, "token": served.token("ann@example.com")}
        ).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        device_c = json.load(response)
    assert device_c["consents"]["marketing"] is False
    assert device_c["consents"]["analytics"] is True
    # The token was used once by the page: the address bar no longer holds it.
    assert "#" not in page.url


def test_a_customer_verifies_a_rights_request_by_e_mail_code(page: Page, served: Served) -> None:
    subject, receipt = record(served.gateway, "f2" * 16)
    served.gateway.consents(subject, receipt, 1)
    served.call(f"/v1/sites/demo/subjects/{subject}/identities",
                {"type": "email", "value": "bob@example.com"})  # fmt: skip
    page.goto(f"{served.gateway.origin}{CENTER}?lang=de")
    email = page.get_by_role("textbox", name="Ihre E-Mail-Adresse (wir senden")
    expect(email).to_be_visible()
    page.get_by_role("button", name="Meine Daten herunterladen").click()
    expect(page.locator("#status")).to_have_text("Bitte geben Sie Ihre E-Mail-Adresse ein.")
    expect(email).to_be_focused()
    email.fill("bob@example.com")
    page.get_by_role("button", name="Meine Daten herunterladen").click()
    expect(page.locator("#status")).to_have_text(
        "Wir haben einen Code an Ihre E-Mail-Adresse gesendet."
    )
    code_input = page.locator("#rights-code-input")
    expect(code_input).to_be_focused()
    code = served.inbox.code_for("bob@example.com")
    code_input.fill("0" * 8 if code != "0" * 8 else "1" * 8)
    code_input.press("Enter")
    expect(page.locator("#status")).to_contain_text("Dieser Code ist nicht richtig.")
    code_input.fill(code)
    page.get_by_role("button", name="Bestätigen").click()
    expect(page.locator("#rights-received")).to_be_visible()
    link = page.locator("#rights-download")
    expect(link).to_be_visible()
    with page.expect_download() as started:
        link.click()
    assert started.value.suggested_filename.endswith(".zip")
