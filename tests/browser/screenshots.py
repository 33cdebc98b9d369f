"""Screenshots of the banner for the README: `python -m tests.browser.screenshots [out_dir]`."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from playwright.sync_api import Browser, sync_playwright

from tests.browser.democonfig import ROOT
from tests.browser.harness import Gateway, demo_page, launch, publisher_site, run_gateway
from tests.browser.servers import LoopbackServer

Scheme = Literal["light", "dark"]
# name, region, Accept-Language, viewport, colour scheme, open the preferences panel
SHOTS: list[tuple[str, str, str, tuple[int, int], Scheme, bool]] = [
    ("desktop", "DE", "en", (1280, 800), "light", False),
    ("desktop-preferences", "DE", "en", (1280, 800), "light", True),
    ("mobile", "US-CA", "en", (390, 844), "light", False),
    ("rtl-arabic", "EG", "ar", (1280, 800), "light", False),
    ("dark", "FR", "fr", (1280, 800), "dark", False),
]


def take(browser: Browser, site: LoopbackServer, gateway: Gateway, out: Path) -> list[Path]:
    """One PNG per entry of SHOTS into ``out``; returns their paths."""
    paths = []
    for name, region, language, (width, height), scheme, panel in SHOTS:
        context = browser.new_context(
            viewport={"width": width, "height": height},
            color_scheme=scheme,
            locale=language,
            is_mobile=width < 500,
            device_scale_factor=1,
        )
        page = context.new_page()
        page.goto(
            demo_page(
                site,
                gateway.script_url(region=region, lang=language),
                path=f"/shot-{name}",
                lang=language,
            )
        )
        page.locator("#cg-host section").wait_for()
        if panel:
            page.locator("#cg-host [data-cg-action=settings]").click()
            page.locator("#cg-host section[data-cg-layer=preferences]").wait_for()
        page.wait_for_timeout(300)  # let the entrance animation finish
        path = out / f"banner-{name}.png"
        page.screenshot(path=str(path))
        paths.append(path)
        context.close()
    return paths


Take = Callable[[Browser, LoopbackServer, Gateway, Path], list[Path]]


def shoot(take: Take) -> None:
    """Run ``take`` against a demo gateway and publisher page; print the files it wrote
    (into argv[1], or docs/screenshots)."""
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    site = publisher_site()
    try:
        with (
            tempfile.TemporaryDirectory() as work,
            run_gateway(site.origin, Path(work)) as gw,
            sync_playwright() as playwright,
        ):
            browser = launch(playwright)
            for path in take(browser, site, gw, out):
                print(path)
            browser.close()
    finally:
        site.close()


if __name__ == "__main__":
    shoot(take)
