"""Screenshots of my privacy center for the README:
`python -m tests.browser.center_screenshots [out_dir]` (desktop, mobile, Arabic right to left;
a visitor with two recorded choices and contact preferences)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from playwright.sync_api import Browser

from tests.browser.harness import Gateway
from tests.browser.screenshots import shoot
from tests.browser.test_privacy_center import CENTER, record

# name, language, viewport
SHOTS = [
    ("desktop", "en", (1100, 900)),
    ("mobile", "en", (390, 844)),
    ("rtl", "ar", (1100, 900)),
]


def post(gateway: Gateway, path: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        gateway.origin + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201


def take(browser: Browser, gateway: Gateway, out: Path) -> list[Path]:
    paths = []
    for n, (name, language, (width, height)) in enumerate(SHOTS):
        secret = f"{0xD0 + n:02x}" * 16
        subject, receipt = record(gateway, secret)
        config = gateway.get_json(f"/v1/sites/demo/config?lang={language}")
        post(gateway, "/v1/sites/demo/consents", {
            "subject_secret": secret, "banner_version": config["banner_version"],
            "action": "custom", "channel": "web",
            "choices": {"analytics": True, "marketing": False, "personalization": True},
        })  # fmt: skip
        post(gateway, "/v1/sites/demo/preferences", {
            "subject_id": subject, "subject_secret": secret, "channel": "web",
            "preferences": {
                "channels": {"email": True, "sms": False, "push": True, "wechat": False},
                "topics": {"newsletter": {"enabled": True, "frequency": "monthly"},
                           "offers": {"enabled": True, "frequency": "weekly",
                                      "channels": {"sms": False}}},
            },
        })  # fmt: skip
        gateway.consents(subject, receipt, 2)
        context = browser.new_context(
            viewport={"width": width, "height": height},
            locale=language,
            is_mobile=width < 500,
            device_scale_factor=1,
        )
        page = context.new_page()
        page.goto(f"{gateway.origin}{CENTER}?lang={language}#subject={subject}&secret={secret}")
        page.locator("#history tbody tr").nth(1).wait_for()
        page.locator('form.prefs[data-line=""] input[name="topic:offers"]:checked').wait_for()
        page.locator("#history summary").first.click()
        page.locator("#history dl").first.wait_for()
        path = out / f"privacy-center-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        paths.append(path)
        context.close()
    return paths


if __name__ == "__main__":
    shoot(lambda browser, site, gateway, out: take(browser, gateway, out))
