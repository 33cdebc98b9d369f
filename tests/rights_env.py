"""The rights tests' environment: the real app on a copy of the demo site with downstream
systems, a real SMTP server in-process (aiosmtpd), a webhook receiver and a movable clock.
The test modules choose the store with a ``store_url`` fixture of their own."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import io
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.cli.keys import create as create_key
from gateway.core.settings import Settings
from gateway.rights import credentials
from gateway.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.helpers import editable_settings
from tests.pg import consent_body, secret_of
from tests.procs import free_port

BASE = "/v1/sites/demo"
ADMIN = {"Authorization": "Bearer admin-token"}
CRM_SECRET = "crm-callback-secret"
HOOK_SECRET = "hook-secret"
SITE_RIGHTS = """
[rights]
[[rights.systems]]
name = "crm"
secret_env = "TEST_RIGHTS_CRM_SECRET"
remind_after = "2 days"
[[rights.systems]]
name = "newsletter"
secret_env = "TEST_RIGHTS_NEWSLETTER_SECRET"
required = false
"""


@dataclass
class Inbox:
    """The SMTP server's handler: every message it accepted."""

    messages: list[EmailMessage] = field(default_factory=list)
    delay: float = 0.0  # a slow relay

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def code_for(self, address: str, timeout: float = 10.0) -> str:
        """The code in the newest message to ``address`` (waits for the background send)."""
        deadline = time.monotonic() + timeout
        while True:
            for message in reversed(self.messages):
                if message["To"] == address:
                    text = plain_text(message)
                    found = re.search(r"code: (\d{8})", text)
                    assert found, text
                    return found.group(1)
            assert time.monotonic() < deadline, "no code e-mail arrived"
            time.sleep(0.02)


def plain_text(message: EmailMessage) -> str:
    """The text/plain part of a code e-mail (it also has an HTML alternative)."""
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, message
    return str(part.get_content())


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


class Hook(BaseHTTPRequestHandler):
    """The webhook receiver (a CRM's endpoint): keeps each signed body it gets."""

    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        stamp = self.headers[TIMESTAMP_HEADER]
        if self.headers[SIGNATURE_HEADER] == sign(HOOK_SECRET.encode(), stamp, body):
            self.server.received.append(orjson.loads(body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", server.received  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def delivered_events(received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for batch in received for e in batch.get("events", [])]


class Clock:
    """The rights service's clock, moved by the test."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


class Env:
    def __init__(
        self,
        client: TestClient,
        settings: Settings,
        key: str,
        inbox: Inbox,
        hooked: list[dict[str, Any]],
    ) -> None:
        self.client = client
        self.hooked = hooked
        self.settings = settings
        self.key = {"Authorization": f"Bearer {key}"}
        self.inbox = inbox
        self.clock = Clock()
        self.state.rights.clock = self.clock

    @property
    def state(self) -> Any:
        return self.client.app.state  # type: ignore[attr-defined]

    def call(self, fn: Any, *args: Any) -> Any:
        assert self.client.portal is not None
        return self.client.portal.call(fn, *args)

    def sid(self, name: str) -> str:
        """The subject id the gateway derives for a test's named subject (its secret is
        tests.pg.secret_of(name)): subjects are capabilities, never chosen names."""
        keys = self.state.recording.subject_keys()
        return str(keys.subject_id("demo", secret_of(name)))

    def consent(self, subject: str, user_agent: str) -> str:
        """Record an accept-all for ``subject`` and wait until the store has it; the receipt."""
        bundle = self.state.gateway.catalog.get("demo")
        r = self.client.post(
            f"{BASE}/consents",
            json=consent_body(bundle, subject, page_url="https://shop.example/p?ref=x"),
            headers={"User-Agent": user_agent},
        )
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 10
        while not self.call(self.state.recording.history, "demo", self.sid(subject))["history"]:
            assert time.monotonic() < deadline, "the forwarder did not deliver"
            time.sleep(0.02)
        return str(r.json()["receipt"])

    def link(self, subject: str, kind: str, value: str) -> None:
        r = self.client.post(
            f"{BASE}/subjects/{subject}/identities",
            json={"type": kind, "value": value},
            headers=self.key,
        )
        assert r.status_code == 201, r.text
        # The link is recorded through the outbox too: wait until the store has it.
        deadline = time.monotonic() + 10
        while self.state.recording.outbox.depth:
            assert time.monotonic() < deadline, "the forwarder did not deliver"
            time.sleep(0.02)

    def ask(self, body: dict[str, Any], **headers: str) -> Any:
        return self.client.post(f"{BASE}/rights-requests", json=body, headers=headers)

    def status(self, request_id: str, token: str) -> Any:
        return self.client.get(
            f"{BASE}/rights-requests/{request_id}", headers={"Authorization": f"Bearer {token}"}
        )

    def verify(self, request_id: str, token: str, code: str) -> Any:
        return self.client.post(
            f"{BASE}/rights-requests/{request_id}/verify",
            json={"code": code},
            headers={"Authorization": f"Bearer {token}"},
        )

    def confirm(self, request_id: str, system: str, body: dict[str, Any], **over: str) -> Any:
        raw = orjson.dumps(body)
        stamp = over.get("timestamp", str(int(self.clock().timestamp())))
        secret = over.get("secret", CRM_SECRET).encode()
        return self.client.post(
            f"/v1/rights-requests/{request_id}/systems/{system}",
            content=raw,
            headers={
                "Content-Type": "application/json",
                "X-Consent-Timestamp": stamp,
                "X-Consent-Signature": over.get(
                    "signature", credentials.system_signature(secret, stamp, raw)
                ),
            },
        )

    def download(self, url: str) -> zipfile.ZipFile:
        r = self.client.get(url.removeprefix("http://testserver"))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/zip"
        return zipfile.ZipFile(io.BytesIO(r.content))

    def tick(self) -> None:
        self.call(self.state.rights.drain)
        self.call(self.state.rights.tick)

    def detail(self, request_id: str) -> dict[str, Any]:
        r = self.client.get(f"/admin/v1/sites/demo/rights-requests/{request_id}", headers=ADMIN)
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result


@pytest.fixture
def env(
    tmp_path: Path,
    inbox: tuple[Inbox, int],
    store_url: str,
    hook: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Env]:
    monkeypatch.setenv("TEST_RIGHTS_CRM_SECRET", CRM_SECRET)
    monkeypatch.setenv("TEST_RIGHTS_NEWSLETTER_SECRET", "newsletter-secret")
    handler, port = inbox
    settings = editable_settings(
        tmp_path,
        smtp_url=f"smtp://127.0.0.1:{port}",
        smtp_from="privacy@demo.example",
        admin_token="admin-token",
        store_url=store_url,
        durability="process",
        node_id="rights-node",
        webhook_url=hook[0],
        webhook_secret=HOOK_SECRET,
    )
    site_file = settings.banners_dir / "demo" / "site.toml"
    site_file.write_text(site_file.read_text() + SITE_RIGHTS)
    key = asyncio.run(create_key(settings, "demo", "staff", ()))[-1]
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:
        yield Env(client, settings, key, handler, hook[1])
