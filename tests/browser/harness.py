"""Reusable pieces of the browser tests and the benchmark: Chromium, the gateway, test pages."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from playwright.sync_api import Browser, Page

from tests.browser.democonfig import ROOT
from tests.browser.servers import LoopbackServer
from tests.procs import free_port, stop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
NONCE = "n0nce-4-tests"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"


def launch(playwright: Any) -> Browser:
    browser: Browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return browser


@dataclass
class Gateway:
    """A real `consent-gateway serve` process on its own loopback port (another origin)."""

    origin: str
    process: subprocess.Popen[bytes]
    log: Path

    def script_url(self, **params: str) -> str:
        query = urlencode(params)
        return f"{self.origin}/v1/sites/demo/consent.js" + (f"?{query}" if query else "")

    def get_json(self, path: str, headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(self.origin + path, headers=headers or {})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def consents(self, subject_id: str, receipt: str, count: int = 1) -> list[dict[str, Any]]:
        """The subject's records in the store, oldest first, once ``count`` have arrived."""
        path = f"/v1/sites/demo/subjects/{subject_id}/consents"
        deadline = time.monotonic() + 10
        while True:
            answer = self.get_json(path, {"Authorization": f"Bearer {receipt}"})
            history: list[dict[str, Any]] = answer["history"]
            if len(history) >= count or time.monotonic() > deadline:
                return sorted(history, key=lambda r: str(r["recorded_at"]))
            time.sleep(0.05)


@contextmanager
def run_gateway(
    site_origin: str,
    work: Path,
    *,
    reload: bool = False,
    prepare: Callable[[Path], None] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Gateway]:
    """`consent-gateway serve` on a free port, serving the demo site to ``site_origin``.

    With ``reload``, edits to ``work/banners`` are published while it runs; ``prepare`` may
    change the copied banners folder before the gateway starts; ``env`` adds settings
    (``GATEWAY_…``) to its environment.
    """
    banners = work / "banners"
    shutil.copytree(ROOT / "banners", banners)
    # The demo site, allowing the test page's origin to record consents.
    toml = banners / "demo" / "site.toml"
    toml.write_text(
        re.sub(
            r"(?m)^allowed_origins = .*$",
            f'allowed_origins = ["{site_origin}"]',
            toml.read_text(encoding="utf-8"),
        ),
        encoding="utf-8",
    )
    if prepare is not None:
        prepare(banners)
    port = free_port()
    log = work / "gateway.log"
    command = [
        str(Path(sys.executable).parent / "consent-gateway"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--banners-dir",
        str(banners),
        "--locales-dir",
        str(ROOT / "locales"),
        "--reload",
        "true" if reload else "false",
    ]
    environment = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(work / "data"),
        # The browser plays a visitor behind a CDN edge on loopback: its geo headers count.
        "GATEWAY_TRUSTED_PROXIES": "127.0.0.1,::1",
        "GATEWAY_GEO_HEADERS": "cloudflare,cloudfront,vercel",
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)
    gw = Gateway(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                gw.get_json("/healthz")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gateway did not start:\n" + log.read_text()) from None
                time.sleep(0.1)
        yield gw
    finally:
        stop(process, timeout=10)


def publisher_site() -> LoopbackServer:
    """The publisher's origin: test pages plus the tags they hold back until consent."""
    server = LoopbackServer()
    server.file(
        "/analytics.js",
        b"window.analyticsRuns = (window.analyticsRuns || 0) + 1;",
        "text/javascript",
    )
    server.file("/ads.js", b"window.adsRuns = (window.adsRuns || 0) + 1;", "text/javascript")
    server.page("/frame.html", "<!doctype html><title>ad frame</title><p>ad</p>")
    return server


ARTICLE = "".join(
    f"<p>Paragraph {i}: the page's own content, which must not move when the banner appears.</p>"
    for i in range(12)
)


def demo_page(
    site: LoopbackServer,
    script_url: str,
    *,
    path: str = "/",
    lang: str = "en",
    extra_body: str = "",
    loading: str = "async",
) -> str:
    """A publisher page: the one-line snippet, blocked tags, a withdrawal link, strict CSP."""
    # 'unsafe-eval' only lets Playwright's wait_for_function poll; inline tags still need the nonce.
    csp = (
        f"script-src 'nonce-{NONCE}' 'unsafe-eval'; style-src 'nonce-{NONCE}'; "
        f"frame-src {site.origin}; object-src 'none'"
    )
    body = f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Demo shop</title>
<style nonce="{NONCE}">body{{font:16px/1.5 sans-serif;margin:2rem;max-width:50rem}}</style>
<script nonce="{NONCE}" src="{html.escape(script_url)}" {loading}></script>
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
