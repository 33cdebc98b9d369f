"""The privacy center in Chromium: a receipt opens the visitor's own choices and history."""

from __future__ import annotations

import json
import urllib.request

import pytest
from playwright.sync_api import Page, expect

from tests.browser.harness import Gateway

pytestmark = pytest.mark.browser


def record(gateway: Gateway, secret: str) -> tuple[str, str]:
    """Record an accept-all choice as an app would (no Origin); returns the subject id the
    gateway derived from the app's secret, and the receipt."""
    config = gateway.get_json("/v1/sites/demo/config")
    body = {
        "subject_secret": secret,
        "banner_version": config["banner_version"],
        "action": "accept_all",
        "channel": "app",
        "choices": {p["id"]: True for p in config["purposes"] if not p["essential"]},
    }
    request = urllib.request.Request(
        gateway.origin + "/v1/sites/demo/consents",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201
        answer = json.load(response)
    return answer["subject_id"], answer["receipt"]


def test_change_and_withdraw_from_the_privacy_center(page: Page, gateway: Gateway) -> None:
    secret = "a1" * 16
    subject, receipt = record(gateway, secret)
    gateway.consents(subject, receipt, 1)  # in the store, so the page shows it
    page.goto(
        f"{gateway.origin}/v1/sites/demo/privacy-center?lang=de#subject={subject}&secret={secret}"
    )
    expect(page.locator("html")).to_have_attribute("lang", "de")
    expect(page.locator("#history tbody tr")).to_have_count(1)
    marketing = page.locator('input[name="marketing"]')
    expect(marketing).to_be_checked()
    expect(page.locator("#no-receipt")).to_be_hidden()

    marketing.uncheck()
    page.get_by_role("button", name="Auswahl speichern").click()
    expect(page.locator("#status")).to_have_text("Ihre Auswahl wurde gespeichert.")
    history = gateway.consents(subject, receipt, 2)
    assert history[-1]["action"] == "custom"
    assert history[-1]["choices"]["marketing"] is False
    assert history[-1]["choices"]["analytics"] is True

    page.get_by_role("button", name="Einwilligung widerrufen").click()
    history = gateway.consents(subject, receipt, 3)
    assert history[-1]["action"] == "withdraw"
    assert not any(v for k, v in history[-1]["choices"].items() if k != "necessary")
    expect(page.locator("#history tbody tr")).to_have_count(3)


def test_without_a_receipt_the_page_only_informs(page: Page, gateway: Gateway) -> None:
    page.goto(f"{gateway.origin}/v1/sites/demo/privacy-center?lang=fr")
    expect(page.locator("#no-receipt")).to_be_visible()
    expect(page.locator("#actions")).to_be_hidden()
    for box in page.locator("input[name]").all():
        expect(box).to_be_disabled()


def test_a_receipt_alone_reads_but_cannot_change(page: Page, gateway: Gateway) -> None:
    # Threat: a receipt (a bearer token that may leak in a mail or a log) used to overwrite the
    # subject's choices: it only reads, and only for a day; changing needs the secret.
    subject, receipt = record(gateway, "c3" * 16)
    gateway.consents(subject, receipt, 1)
    page.goto(f"{gateway.origin}/v1/sites/demo/privacy-center?lang=en#receipt={receipt}")
    expect(page.locator("#history tbody tr")).to_have_count(1)
    page.locator('input[name="marketing"]').uncheck()
    page.get_by_role("button", name="Save choices").click()
    expect(page.locator("#status")).not_to_have_text("Your choices have been saved.")
    assert len(gateway.consents(subject, receipt, 1)) == 1
