"""The admin dashboard in Chromium: charts render for demo data, and each table's CSV
download is the API's CSV."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urljoin

import asyncpg
import pytest
from playwright.sync_api import Browser, Route

from gateway.sinks.postgres import PostgresStore
from tests.pg import dsn_for, make_record
from tests.procs import free_port, stop

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "dashboard-token-" + "x" * 16
SCREENSHOT = ROOT / "docs" / "screenshots" / "admin-dashboard.png"


async def _demo_data(dsn: str, version: str) -> None:
    """Three weeks of decisions; a new banner version on day 11 lifts the accept rate."""
    rng = random.Random(3)
    records = []
    for day in range(1, 22):
        for i in range(150):
            v, p = ("v-old", 0.35) if day < 11 else (version, 0.55)
            action = "accept_all" if rng.random() < p else rng.choice(
                ["reject_all", "custom", "custom", "withdraw", "gpc"])  # fmt: skip
            records.append(make_record(
                f"s{day}-{i}", recorded_at=f"2026-02-{day:02d}T{i // 10:02d}:{i % 60:02d}:00Z",
                action=action, banner_version=v,
                region_country=rng.choice(["DE", "FR", "IT", "US"]),
                language=rng.choice(["en", "de", "fr"]),
            ))  # fmt: skip
    store = PostgresStore(dsn, pool_size=1)
    await store.open()
    for start in range(0, len(records), 500):
        await store.write_batch(records[start : start + 500])
    await store.close()


def _in_thread(coro_fn: object) -> None:
    # Playwright's sync API keeps an event loop in this thread: run asyncio elsewhere.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro_fn).result()  # type: ignore[arg-type]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    name = f"dash_{uuid.uuid4().hex[:10]}"
    admin = dsn_for("postgres")

    async def create() -> None:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    _in_thread(create())
    port = free_port()
    env = {**os.environ, "GATEWAY_STORE_URL": dsn_for(name), "GATEWAY_ADMIN_TOKEN": TOKEN,
           "GATEWAY_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    command = [str(Path(sys.executable).parent / "consent-gateway"), "serve", "--host",
               "127.0.0.1", "--port", str(port), "--reload", "false"]  # fmt: skip
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log.read_text()) from None
                time.sleep(0.2)
        _in_thread(_demo_data(dsn_for(name), "v-new"))
        yield base
    finally:
        stop(process, timeout=10)
        _in_thread(drop())


def _api(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return bytes(response.read())


def test_dashboard_renders_charts_and_its_csv_is_the_apis(
    browser: Browser, served: str, tmp_path: Path
) -> None:
    context = browser.new_context(
        # With the Bearer header (APIs); a browser session is the next test.
        extra_http_headers={"Authorization": f"Bearer {TOKEN}"}, accept_downloads=True,
        viewport={"width": 1000, "height": 900},
    )  # fmt: skip
    try:
        page = context.new_page()
        page.goto(f"{served}/admin/dashboard?site=demo")
        page.wait_for_selector("body[data-charts-ready=true]", timeout=10_000)
        for chart in ("optin", "regions", "languages"):
            drawn = page.evaluate(
                "id => { const c = document.getElementById(id); const d = c.getContext('2d')"
                ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
                " for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }",
                chart,
            )
            assert drawn > 5000, chart  # pixels painted: a chart, not an empty canvas
        assert "v-new" in page.inner_text("section:nth-of-type(4)")  # the flagged change
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=False)
        # The link followed with the bearer token (the next test clicks it in a session).
        href = page.get_attribute("section:nth-of-type(2) a.csv", "href")
        assert href is not None
        downloaded = _api(urljoin(f"{served}/admin/dashboard", href))
        api = _api(f"{served}/admin/v1/sites/demo/reports/consents?group=region&format=csv")
        assert downloaded == api
        assert downloaded.count(b"\r\n") == 5  # header + four regions
    finally:
        context.close()


def _serve(body: str) -> Callable[[Route], None]:
    return lambda route: route.fulfill(body=body, content_type="text/html")


def test_a_browser_logs_in_follows_a_csv_link_and_cannot_be_forged(
    browser: Browser, served: str
) -> None:
    """A plain browser (no header) logs in once with the admin token, opens the dashboard
    and clicks a CSV link: the download is the API's CSV. A page of another origin that
    posts to an admin endpoint with that browser's session is refused (threat: CSRF)."""
    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        page.goto(f"{served}/admin/dashboard?site=demo")
        assert "unauthorized" in page.inner_text("body")  # no session yet
        page.goto(f"{served}/admin/login?next=/admin/dashboard%3Fsite%3Ddemo")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-charts-ready=true]")
        assert page.url == f"{served}/admin/dashboard?site=demo"
        (cookie,) = context.cookies()
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        with page.expect_download() as caught:
            page.click("section:nth-of-type(2) a.csv")
        path = caught.value.path()
        api = _api(f"{served}/admin/v1/sites/demo/reports/consents?group=region&format=csv")
        assert Path(path).read_bytes() == api
        # Another origin's page (same site, other port; and another site) posts a reload.
        port = int(served.rsplit(":", 1)[1])
        # Same site: the cookie goes along, but the request is marked same-site and carries
        # no CSRF token (403). Another site: SameSite=Strict keeps the cookie back (401).
        for evil, refused in (
            (f"http://127.0.0.1:{port + 1}", 403),
            ("http://attacker.example", 401),
        ):
            form = (
                f'<form method=post action="{served}/admin/v1/reload"></form>'
                "<script>document.forms[0].submit()</script>"
            )
            page.route(f"{evil}/**", _serve(form))
            with page.expect_response(f"{served}/admin/v1/reload") as answer:
                page.goto(f"{evil}/page")
            assert answer.value.status == refused, (evil, answer.value.status)
        # The session itself still works for the gateway's own pages, until it logs out.
        page.goto(f"{served}/admin/rights")
        assert "Rights requests" in page.inner_text("h1")
        page.click("text=Log out")
        page.wait_for_url(f"{served}/admin/login")
        assert context.cookies() == []
        page.goto(f"{served}/admin/rights")
        assert "unauthorized" in page.inner_text("body")
    finally:
        context.close()
