"""The privacy center's rights section in Chromium: an anonymous visitor downloads their data
and deletes it, with nothing but the receipt the banner gave them."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.browser.harness import Gateway
from tests.browser.test_privacy_center import record

pytestmark = pytest.mark.browser


def test_a_visitor_downloads_their_data(page: Page, gateway: Gateway) -> None:
    subject, receipt = record(gateway, "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1")
    gateway.consents(subject, receipt, 1)
    page.goto(f"{gateway.origin}/v1/sites/demo/privacy-center?lang=de#receipt={receipt}")
    section = page.locator("#rights")
    expect(section).to_be_visible()
    # The region is unknown here: the fail-closed rule offers every right, in German.
    expect(section.get_by_role("heading")).to_have_text("Ihre Daten")
    expect(page.get_by_role("button", name="Meine Daten löschen")).to_be_visible()
    page.get_by_role("button", name="Meine Daten herunterladen").click()
    expect(page.locator("#rights-received")).to_be_visible()
    link = page.get_by_role("link", name="Ihre Daten sind bereit: herunterladen (ZIP).")
    with page.expect_download() as started:
        link.click()
    path = started.value.path()
    archive = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    exported = json.loads(archive.read("subject.json"))
    assert [s["subject_id"] for s in exported["subjects"]] == [subject]
    assert exported["subjects"][0]["records"][0]["user_agent"].startswith("Python-urllib")


def test_a_visitor_deletes_their_data(page: Page, gateway: Gateway) -> None:
    subject, receipt = record(gateway, "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2")
    gateway.consents(subject, receipt, 1)
    page.goto(f"{gateway.origin}/v1/sites/demo/privacy-center?lang=en#receipt={receipt}")
    asked: list[str] = []

    def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.get_by_role("button", name="Delete my data").click()
    expect(page.locator("#rights-received")).to_be_visible()
    assert asked == ["Delete the data we hold about you? This cannot be undone."]
    (stored,) = gateway.consents(subject, receipt, 1)
    # The subject API never shows the user agent or IP prefix; the stores' erasure of them is
    # checked in tests/test_rights_flow.py.
    assert stored.get("user_agent", "") == "" and stored.get("ip_truncated") is None
    assert stored["choices"]["marketing"] is True  # what was consented, and when, stays
