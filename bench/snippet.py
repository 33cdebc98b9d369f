"""Banner benchmark: navigation to banner visible, and bytes, for our snippet and cookieconsent v3.

Run `python -m bench.snippet [runs]` after `npm install` (vanilla-cookieconsent is a dev
dependency); `python -m bench.snippet --sizes` prints only the first visit's bytes as the gateway
sends them (gzip and brotli), for every demo locale and rule model, and its lazily loaded parts.
Both banners load on the same publisher page in Debian's Chromium, each run in a
fresh browser context (cold cache); the gateway is a real `consent-gateway serve` process on
another origin, cookieconsent is self-hosted on the page's origin as its docs recommend.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser, Response, sync_playwright

from tests.browser.democonfig import ROOT
from tests.browser.harness import ARTICLE, launch, publisher_site, run_gateway
from tests.browser.servers import LoopbackServer

CC_DIST = ROOT / "node_modules" / "vanilla-cookieconsent" / "dist"

# The first frame in which a banner is laid out and not transparent, in ms since navigation.
WATCH = """(() => {
  function look() {
    const host = document.querySelector('#cg-host');
    const el = (host && host.shadowRoot && host.shadowRoot.querySelector('section'))
      || document.querySelector('#cc-main .cm');
    if (el) {
      const box = el.getBoundingClientRect(), style = getComputedStyle(el);
      if (box.height > 0 && style.visibility !== 'hidden' && Number(style.opacity) > 0) {
        window.__bannerVisible = performance.now();
        return;
      }
    }
    requestAnimationFrame(look);
  }
  requestAnimationFrame(look);
})();"""

# The demo site's English copy, shared by both banners.
DESCRIPTION = (
    "We use cookies and similar technologies to run this site and, with your consent, "
    "to measure its audience and personalise content and advertising. You can accept "
    "all, reject all or choose per purpose, and change your mind at any time."
)
PURPOSES = [
    (
        "necessary",
        "Strictly necessary",
        "Needed for the site to work: security, load balancing "
        "and remembering your privacy choices.",
    ),
    (
        "analytics",
        "Analytics",
        "Helps us understand how the site is used, through aggregated "
        "statistics, so we can improve it.",
    ),
    (
        "marketing",
        "Marketing",
        "Lets us and our advertising partners show you relevant ads and "
        "measure their effectiveness.",
    ),
    (
        "personalization",
        "Personalisation",
        "Remembers your preferences and tailors content and recommendations to you.",
    ),
]

# cookieconsent v3 configured like the demo site: same purposes, same English copy.
CC_CONFIG = {
    "hideFromBots": False,  # it would hide from the automated browser
    "categories": {
        pid: ({"enabled": True, "readOnly": True} if pid == "necessary" else {})
        for pid, _, _ in PURPOSES
    },
    "language": {
        "default": "en",
        "translations": {
            "en": {
                "consentModal": {
                    "title": "We value your privacy",
                    "description": DESCRIPTION,
                    "acceptAllBtn": "Accept all",
                    "acceptNecessaryBtn": "Reject all",
                    "showPreferencesBtn": "Customize",
                    "footer": '<a href="/privacy">Privacy policy</a>',
                },
                "preferencesModal": {
                    "title": "Privacy preferences",
                    "acceptAllBtn": "Accept all",
                    "acceptNecessaryBtn": "Reject all",
                    "savePreferencesBtn": "Save choices",
                    "closeIconLabel": "Close",
                    "sections": [
                        {
                            "description": "Choose which purposes you allow. "
                            "Strictly necessary ones are always on."
                        },
                        *(
                            {"title": name, "description": text, "linkedCategory": pid}
                            for pid, name, text in PURPOSES
                        ),
                    ],
                },
            }
        },
    },
}
CC_INIT = "CookieConsent.run(" + json.dumps(CC_CONFIG) + ");"


def page_html(head: str) -> str:
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Demo shop</title>
{head}</head><body><header><h1>Demo shop</h1></header><main>{ARTICLE}</main>
<footer><a href="#" data-cg-open>Privacy settings</a></footer></body></html>"""


@dataclass(frozen=True)
class Figures:
    name: str
    visible_ms: list[float]
    files: dict[str, tuple[int, int]]  # url path → (bytes as sent, gzip -6 bytes)

    def row(self) -> str:
        times = sorted(self.visible_ms)
        p90 = times[min(len(times) - 1, round(0.9 * (len(times) - 1)))]
        raw = sum(r for r, _ in self.files.values())
        packed = sum(z for _, z in self.files.values())
        return (
            f"{self.name:<26} visible: median {statistics.median(times):6.1f} ms, "
            f"p90 {p90:6.1f} ms | {len(self.files)} request(s), {raw / 1024:5.1f} KB, "
            f"{packed / 1024:5.1f} KB gzipped"
        )


def measure(browser: Browser, name: str, url: str, runs: int) -> Figures:
    """Open ``url`` ``runs`` times in fresh contexts; time to banner and banner bytes."""
    visible: list[float] = []
    files: dict[str, tuple[int, int]] = {}
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.add_init_script(WATCH)
        page = context.new_page()
        responses: list[Response] = []

        def keep(response: Response, into: list[Response] = responses) -> None:
            into.append(response)

        page.on("response", keep)
        page.goto(url)
        page.wait_for_function("window.__bannerVisible !== undefined", timeout=10_000)
        visible.append(float(page.evaluate("window.__bannerVisible")))
        for response in responses:
            if response.request.resource_type in ("script", "stylesheet"):
                body = response.body()
                path = response.url.split("?")[0].split("/", 3)[-1]
                files[path] = (len(body), len(gzip.compress(body, compresslevel=6)))
        context.close()
    return Figures(name, visible, files)


# One region per rule model of the demo site, and every locale it ships.
SIZE_REGIONS = {"DE": "opt-in (GDPR)", "US-CA": "opt-out (CCPA)", "CN": "PIPL", "JP": "notice",
                "BR": "LGPD"}  # fmt: skip
SIZE_LOCALES = ["en", "de", "fr", "es", "it", "nl", "pt-BR", "zh-Hans", "zh-Hant", "ja", "ko", "ar"]
BUDGET = 5500  # issue 15: a first visit of at most 5.5 KB (5,500 B) gzipped


def sizes() -> None:
    """consent.js as sent (Content-Length per encoding) for each locale and rule model, by
    the gateway started as README tells users (`consent-gateway serve`)."""
    import httpx

    from bench.harness import gateway, temp_data_dir

    env = {"GATEWAY_DATA_DIR": temp_data_dir()}
    with gateway(env) as base, httpx.Client(base_url=base, timeout=10) as client:

        def sent(path: str, coding: str) -> int:
            answer = client.get(path, headers={"Accept-Encoding": coding})
            answer.raise_for_status()
            return int(answer.headers["content-length"])

        table: dict[tuple[str, str], tuple[int, int, int]] = {}
        for region in SIZE_REGIONS:
            for lang in SIZE_LOCALES:
                path = f"/v1/sites/demo/consent.js?region={region}&lang={lang}"
                table[region, lang] = (sent(path, "identity"), sent(path, "gzip"), sent(path, "br"))
        print(f"consent.js, first visit, bytes as sent (budget {BUDGET} gzipped):")
        print(f"{'rule model':<16}{'max raw':>9}{'max gzip':>10}{'max br':>8}  largest locale")
        for region, model in SIZE_REGIONS.items():
            rows = {lang: table[region, lang] for lang in SIZE_LOCALES}
            largest = max(rows, key=lambda k: rows[k][1])
            print(
                f"{model:<16}{max(r[0] for r in rows.values()):>9}"
                f"{max(r[1] for r in rows.values()):>10}{max(r[2] for r in rows.values()):>8}"
                f"  {largest}"
            )
        worst = max(table.values(), key=lambda r: r[1])
        print(f"max over {len(table)} combinations: {worst[1]} B gzip, "
              f"{max(r[2] for r in table.values())} B brotli")  # fmt: skip
        for part in ("preferences?region=DE&lang=de", "preferences?region=CN&lang=ja", "more.js"):
            path = f"/v1/sites/demo/parts/{part}"
            print(f"part {part:<34} {sent(path, 'gzip'):>6} B gzip {sent(path, 'br'):>6} B br "
                  "(loaded when opened / after the banner is up)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=int, nargs="?", default=15, help="cold loads of each page")
    parser.add_argument("--sizes", action="store_true", help="only the first visit's bytes")
    args = parser.parse_args()
    if args.sizes:
        sizes()
        return
    runs = args.runs
    site: LoopbackServer = publisher_site()
    site.file(
        "/cc/cookieconsent.umd.js",
        (CC_DIST / "cookieconsent.umd.js").read_bytes(),
        "text/javascript",
    )
    site.file("/cc/cookieconsent.css", (CC_DIST / "cookieconsent.css").read_bytes(), "text/css")
    site.file("/cc/init.js", CC_INIT.encode(), "text/javascript")
    try:
        with (
            tempfile.TemporaryDirectory() as work,
            run_gateway(site.origin, Path(work)) as gw,
            sync_playwright() as playwright,
        ):
            ours = site.page(
                "/gateway", page_html(f'<script src="{gw.script_url(region="DE")}" async></script>')
            )
            theirs = site.page(
                "/cookieconsent",
                page_html(
                    '<link rel="stylesheet" href="/cc/cookieconsent.css">'
                    '<script defer src="/cc/cookieconsent.umd.js"></script>'
                    '<script defer src="/cc/init.js"></script>'
                ),
            )
            browser = launch(playwright)
            measure(browser, "warm-up", ours, 2)
            measure(browser, "warm-up", theirs, 2)
            results = [
                measure(browser, "consent gateway snippet", ours, runs),
                measure(browser, "cookieconsent v3.1", theirs, runs),
            ]
            browser.close()
    finally:
        site.close()
    print(f"{runs} cold loads each, Chromium, loopback:")
    for figures in results:
        print(figures.row())
        for path, (raw, packed) in sorted(figures.files.items()):
            print(f"    {path:<40} {raw:>7} B  {packed:>6} B gzipped")


if __name__ == "__main__":
    main()
