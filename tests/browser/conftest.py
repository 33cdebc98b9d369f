"""One Chromium per session; a test site on one origin and the real gateway on another."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.browser.harness import Gateway, launch, publisher_site, run_gateway
from tests.browser.servers import LoopbackServer


# Package scope: Playwright's sync API keeps an event loop running in this thread until it
# stops, which would break the asyncio tests collected after this package.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def site() -> Iterator[LoopbackServer]:
    server = publisher_site()
    yield server
    server.close()


@pytest.fixture(scope="session")
def gateway(site: LoopbackServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with run_gateway(site.origin, tmp_path_factory.mktemp("gateway")) as gw:
        yield gw


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(locale="en-US")
    ctx.set_default_timeout(5000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()
