"""Screenshots of the rights features for the README:
`python -m tests.browser.rights_screenshots [out_dir]` (the privacy center's rights section
after a download request, and the admin queue with an overdue-free mix of requests)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

from aiosmtpd.controller import Controller
from playwright.sync_api import sync_playwright

from tests.browser.democonfig import ROOT
from tests.browser.harness import Gateway, launch, publisher_site, run_gateway
from tests.browser.test_privacy_center import record
from tests.procs import free_port
from tests.rights_env import Inbox

TOKEN = "screenshot-admin-token"  # a throw-away gateway's token


def ask(gateway: Gateway, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        gateway.origin + "/v1/sites/demo/rights-requests",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 202


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    os.environ["GATEWAY_ADMIN_TOKEN"] = TOKEN
    site = publisher_site()
    # A real SMTP server in-process: a request by e-mail address waits for its code.
    port = free_port()
    smtp = Controller(Inbox(), hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        with (
            tempfile.TemporaryDirectory() as work,
            run_gateway(
                site.origin, Path(work), env={"GATEWAY_SMTP_URL": f"smtp://127.0.0.1:{port}"}
            ) as gw,
            sync_playwright() as playwright,
        ):
            recorded = [record(gw, f"{n:02x}" * 16) for n in range(3)]
            for subject, receipt in recorded:
                gw.consents(subject, receipt, 1)
            receipts = [receipt for _, receipt in recorded]
            ask(gw, {"type": "portability", "receipt": receipts[1]})
            ask(gw, {"type": "opt_out_sale", "receipt": receipts[2]})
            ask(gw, {"type": "access", "identity": {"type": "email", "value": "ann@example.com"}})
            browser = launch(playwright)
            page = browser.new_page(viewport={"width": 1000, "height": 900}, locale="en")
            page.goto(f"{gw.origin}/v1/sites/demo/privacy-center?lang=en#receipt={receipts[0]}")
            page.get_by_role("button", name="Download my data").click()
            page.locator("#rights-ready").wait_for()
            page.locator("#rights").scroll_into_view_if_needed()
            path = out / "privacy-center-rights.png"
            page.locator("#rights").screenshot(path=str(path))
            print(path)
            admin = browser.new_page(
                viewport={"width": 1280, "height": 400},
                http_credentials={"username": "admin", "password": TOKEN},
            )
            admin.goto(f"{gw.origin}/admin/rights?site=demo")
            path = out / "admin-rights-queue.png"
            admin.screenshot(path=str(path), full_page=True)
            print(path)
            browser.close()
    finally:
        smtp.stop()
        site.close()


if __name__ == "__main__":
    main()
