"""One Chromium per session; a test site on one origin and the gateway on another."""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from gateway.snippet import Snippet
from tests.browser.democonfig import ROOT, demo_config
from tests.browser.servers import LoopbackServer, RecordStore, Reply

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
NONCE = "n0nce-4-tests"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"


def launch(playwright: Any) -> Browser:
    browser: Browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@dataclass
class Gateway:
    """The gateway origin: serves consent.js for the demo site and records choices."""

    server: LoopbackServer
    store: RecordStore
    snippet: Snippet

    def script_url(self, **params: str) -> str:
        query = urlencode(params)
        return f"{self.server.origin}/v1/sites/demo/consent.js" + (f"?{query}" if query else "")

    def consents(self, subject_id: str) -> list[dict[str, Any]]:
        return self.store.for_subject(subject_id)

    def serve_js(self, _path: str, query: Mapping[str, list[str]], _body: bytes,
                 headers: Mapping[str, str]) -> Reply:
        one = {k: v[0] for k, v in query.items()}
        config = demo_config(
            one.get("rule", "gdpr"),
            record_url=f"{self.server.origin}/v1/sites/demo/consents",
            gpc=headers.get("Sec-GPC") == "1",
            revision=one.get("rev", "rev1"),
            language=one.get("lang", "en"),
            direction=one.get("dir", "ltr"),
        )
        return 200, {"Content-Type": "text/javascript; charset=utf-8"}, (
            self.snippet.assemble(config))


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    server = LoopbackServer()
    store = RecordStore()
    gw = Gateway(server, store, Snippet.load(ROOT / "static"))
    server.routes[("GET", "/v1/sites/demo/consent.js")] = gw.serve_js
    server.routes[("POST", "/v1/sites/demo/consents")] = store.post
    yield gw
    server.close()


@pytest.fixture(scope="session")
def site() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    server.file("/analytics.js", b"window.analyticsRuns = (window.analyticsRuns || 0) + 1;",
                "text/javascript")
    server.file("/ads.js", b"window.adsRuns = (window.adsRuns || 0) + 1;", "text/javascript")
    server.page("/frame.html", "<!doctype html><title>ad frame</title><p>ad</p>")
    yield server
    server.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(locale="en-US")
    ctx.set_default_timeout(5000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


ARTICLE = "".join(
    f"<p>Paragraph {i}: the page's own content, which must not move when the banner appears."
    "</p>" for i in range(12)
)


def demo_page(site: LoopbackServer, script_url: str, *, path: str = "/", lang: str = "en",
              extra_body: str = "") -> str:
    """A publisher page: the one-line snippet, blocked tags, a withdrawal link, strict CSP."""
    # 'unsafe-eval' only lets Playwright's wait_for_function poll; inline tags still need the nonce.
    csp = (f"script-src 'nonce-{NONCE}' 'unsafe-eval'; style-src 'nonce-{NONCE}'; "
           f"frame-src {site.origin}; object-src 'none'")
    body = f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Demo shop</title>
<style nonce="{NONCE}">body{{font:16px/1.5 sans-serif;margin:2rem;max-width:50rem}}</style>
<script nonce="{NONCE}" src="{html.escape(script_url)}" async></script>
<script type="text/plain" data-category="analytics" nonce="{NONCE}">
  window.inlineAnalyticsRuns = (window.inlineAnalyticsRuns || 0) + 1;
</script>
<script type="text/plain" data-category="analytics" data-src="/analytics.js" nonce="{NONCE}">
</script>
<script type="text/plain" data-category="marketing" data-src="/ads.js" nonce="{NONCE}">
</script>
</head><body>
<header><h1>Demo shop</h1><nav><a href="#main">Products</a></nav></header>
<main id="main">{ARTICLE}
<iframe title="advert" data-category="marketing" data-src="/frame.html" width="300"
  height="100"></iframe>
</main>
<footer><a href="#" data-cg-open>Privacy settings</a></footer>
{extra_body}
</body></html>"""
    return site.page(path, body, {"Content-Security-Policy": csp})


def inject_axe(page: Page) -> None:
    page.add_script_tag(content=AXE.read_text(encoding="utf-8"))


def data_path(name: str) -> Path:
    return ROOT / "docs" / "screenshots" / name
