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
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import asyncpg
import pytest
from playwright.sync_api import Browser

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
        # Admin is Bearer only (a browser caches Basic credentials and sends them cross-site).
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
        # The link is followed with the bearer token (admin is Bearer only: a browser that is
        # not told the header cannot follow it, so the table's link is checked, not clicked).
        href = page.get_attribute("section:nth-of-type(2) a.csv", "href")
        assert href is not None
        downloaded = _api(urljoin(f"{served}/admin/dashboard", href))
        api = _api(f"{served}/admin/v1/sites/demo/reports/consents?group=region&format=csv")
        assert downloaded == api
        assert downloaded.count(b"\r\n") == 5  # header + four regions
    finally:
        context.close()
