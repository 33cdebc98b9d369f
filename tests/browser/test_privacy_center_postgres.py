"""My privacy center against the central store at scale, in Chromium: a change of a topic's
frequency and a dropped SMS channel reach PostgreSQL's latest state and the webhook's
`preferences.updated` event (real PostgreSQL, a real webhook receiver)."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest
from playwright.sync_api import Page, expect

from tests.browser.harness import Gateway, run_gateway
from tests.browser.test_privacy_center import open_center
from tests.pg import dsn_for, scratch_database
from tests.rights_env import HOOK_SECRET, delivered_events
from tests.rights_env import hook as hook  # the webhook receiver fixture

pytestmark = pytest.mark.browser


def in_thread(coroutine: Any) -> Any:
    """Run a coroutine on a loop of its own: Playwright's sync API runs one in this thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@pytest.fixture
def database() -> Iterator[str]:
    """A scratch database for the gateway's store, held open by a thread of its own for the
    test's length (its context manager drops it when it ends)."""
    ready: queue.Queue[str] = queue.Queue()
    done = threading.Event()

    async def hold() -> None:
        async with scratch_database() as name:
            ready.put(name)
            await asyncio.to_thread(done.wait)

    holder = threading.Thread(target=asyncio.run, args=(hold(),), daemon=True)
    holder.start()
    try:
        yield dsn_for(ready.get(timeout=30))
    finally:
        done.set()
        holder.join(timeout=30)


@pytest.fixture
def served(
    database: str,
    hook: tuple[str, list[dict[str, Any]]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    url, _ = hook
    env = {
        "GATEWAY_STORE_URL": database,
        "GATEWAY_WEBHOOK_URL": url,
        "GATEWAY_WEBHOOK_SECRET": HOOK_SECRET,
        "GATEWAY_WEBHOOK_DATA": "events",
    }
    with run_gateway("http://127.0.0.1:9", tmp_path_factory.mktemp("pg-center"), env=env) as gw:
        yield gw


async def _state(dsn: str, subject: str) -> dict[str, Any] | None:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT preferences FROM preference_state "
            "WHERE site = 'demo' AND subject_id = $1 AND product_line = ''",
            subject,
        )
    finally:
        await connection.close()
    return None if row is None else json.loads(row["preferences"])


def test_a_frequency_change_and_a_dropped_channel_reach_postgres_and_the_webhook(
    page: Page,
    served: Gateway,
    database: str,
    hook: tuple[str, list[dict[str, Any]]],
) -> None:
    _, received = hook
    secret = "c7" * 16
    subject = open_center(page, served, secret)
    general = page.locator('form.prefs[data-line=""]')
    for name in ("channel:email", "channel:sms", "topic:offers"):
        general.locator(f'input[name="{name}"]').check()
    general.get_by_role("button", name="Save contact preferences").click()
    expect(page.locator("#status")).to_have_text("Your contact preferences have been saved.")
    general.locator('select[name="frequency:offers"]').select_option("monthly")
    general.locator('input[name="channel:sms"]').uncheck()
    general.get_by_role("button", name="Save contact preferences").click()
    expect(page.locator("#status")).to_have_text("Your contact preferences have been saved.")

    deadline = time.monotonic() + 15
    while True:
        state = in_thread(_state(database, subject))
        offers = ((state or {}).get("topics") or {}).get("offers") or {}
        if offers.get("frequency") == "monthly" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert state is not None
    assert state["channels"]["sms"] is False and state["channels"]["email"] is True
    assert offers["enabled"] is True and offers["frequency"] == "monthly"

    while True:
        events = [
            e
            for e in delivered_events(received)
            if e["type"] == "preferences.updated" and e["subject"]["subject_id"] == subject
        ]
        if len(events) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(events) == 2, delivered_events(received)
    last = max(events, key=lambda e: str(e["time"]))["preferences"]
    assert last["channel"] == "web" and last["actor"] == "subject"
    assert last["changes"]["channels"]["sms"] is False
    assert last["changes"]["topics"]["offers"]["frequency"] == "monthly"
