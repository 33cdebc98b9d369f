"""A stand-in for POST /preferences and the subject's state read, used by the privacy-center
browser tests only while the gateway has no such endpoints (helper "prefs" is building them).
Remove once they exist: the fixture then does nothing."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from typing import Any

from playwright.sync_api import Page, Route

from gateway.preferences.validation import apply
from tests.browser.harness import Gateway

STATES: dict[str, dict[str, Any]] = {}


def endpoint_exists(gateway: Gateway) -> bool:
    request = urllib.request.Request(
        gateway.origin + "/v1/sites/demo/preferences", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as exc:
        return exc.code not in (404, 405)
    return True


def install(page: Page, gateway: Gateway) -> None:
    if endpoint_exists(gateway):
        return

    def post(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        line = body.get("product_line") or ""
        subject = body["subject_id"]
        lines = STATES.setdefault(subject, {})
        lines[line] = apply(lines.get(line), body["preferences"])
        answer = {"subject_id": subject, "record_id": str(uuid.uuid4()), "receipt": "stub"}
        route.fulfill(status=201, content_type="application/json", body=json.dumps(answer))

    def state(route: Route) -> None:
        if route.request.method != "GET":
            return route.continue_()
        subject = route.request.url.rsplit("/", 1)[1]
        body = {"subject_id": subject, "preferences": STATES.get(subject, {})}
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route(gateway.origin + "/v1/sites/demo/preferences", post)
    page.route(
        re.compile(re.escape(gateway.origin) + r"/v1/sites/demo/subjects/[0-9a-f]{32}$"), state
    )


def stored_state(gateway: Gateway, subject: str, secret: str) -> dict[str, Any] | None:
    if endpoint_exists(gateway):
        return None
    return {"subject_id": subject, "preferences": STATES.get(subject, {})}
