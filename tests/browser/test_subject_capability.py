"""Chromium: a subject id taken from one browser opens nothing in another (review §4d)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Browser

from tests.browser.harness import Gateway
from tests.browser.servers import LoopbackServer
from tests.browser.test_banner import action, recorded, visit

pytestmark = pytest.mark.browser


def test_a_subject_id_from_one_browser_cannot_read_or_write_from_another(
    browser: Browser, site: LoopbackServer, gateway: Gateway
) -> None:
    """Threat: someone who learnt a visitor's subject id (from a shared screen, a log, a
    webhook, the page's own script) reads their history (device and visit included) or
    overwrites their choice from another browser, without the secret only the visitor's
    browser holds."""
    victim_ctx = browser.new_context(locale="en-US")
    attacker_ctx = browser.new_context(locale="en-US")
    try:
        victim = victim_ctx.new_page()
        visit(victim, site, gateway, "/capability", "DE")
        action(victim, "accept_all")
        mine: dict[str, Any] = recorded(victim)["receipt"]
        subject = mine["subject_id"]
        gateway.consents(subject, mine["receipt"], 1)
        assert mine["secret"] not in subject and len(subject) == 32

        attacker = attacker_ctx.new_page()
        visit(attacker, site, gateway, "/capability", "DE")
        action(attacker, "reject_all")
        own: dict[str, Any] = recorded(attacker)["receipt"]
        assert own["subject_id"] != subject
        base = f"{gateway.origin}/v1/sites/demo"
        # From the attacker's browser, on the site's origin (CORS allowed), with everything
        # it has: the victim's id, its own secret and its own receipt.
        results = attacker.evaluate(
            """async ([base, subject, own]) => {
              const read = (auth) => fetch(`${base}/subjects/${subject}/consents`,
                { headers: auth ? { Authorization: auth } : {} }).then((r) => r.status);
              const write = (extra) => fetch(`${base}/consents`, { method: "POST",
                headers: { "Content-Type": "text/plain" },
                body: JSON.stringify(Object.assign({ subject_id: subject,
                  banner_version: ConsentGateway.config.banner_version, action: "reject_all",
                  choices: { analytics: false, marketing: false, personalization: false } },
                  extra)) }).then((r) => r.status);
              return {
                read_bare: await read(null),
                read_own_secret: await read("Subject " + own.secret),
                read_own_receipt: await read("Bearer " + own.receipt),
                write_bare: await write({}),
                write_own_secret: await write({ subject_secret: own.secret }),
              };
            }""",
            [base, subject, own],
        )
        assert results == {
            "read_bare": 403,
            "read_own_secret": 403,
            "read_own_receipt": 403,
            "write_bare": 403,
            "write_own_secret": 403,
        }, json.dumps(results)
        # The victim's own browser still reads and its choice stands.
        history = gateway.consents(subject, mine["receipt"], 1)
        assert [h["action"] for h in history] == ["accept_all"]
        status = victim.evaluate(
            """async ([base, r]) => (await fetch(`${base}/subjects/${r.subject_id}/consents`,
              { headers: { Authorization: "Subject " + r.secret } })).status""",
            [base, mine],
        )
        assert status == 200
    finally:
        victim_ctx.close()
        attacker_ctx.close()
