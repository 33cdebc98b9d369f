"""Preferences through the real app, on the embedded store and on PostgreSQL: recorded like
consents, kept as latest state, sent to the webhook as events valid against their schemas,
answered by contactability, and turned off per topic by a one-click unsubscribe."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import jsonschema
import orjson
import pytest
from starlette.testclient import TestClient

from gateway.cli.docs import event_schemas
from gateway.core.settings import Settings
from tests.pg import pg_dsn, recording_app, secret_of  # noqa: F401
from tests.test_api import new_key

BASE = "/v1/sites/demo"
PEER = ("127.0.0.1", 50000)
ORIGIN = {"Origin": "http://127.0.0.1:8000"}
PUBLIC = "https://consent.example"
ANN = {"type": "email", "value": "Ann@Example.com"}


class Hook(http.server.BaseHTTPRequestHandler):
    """A CDP endpoint: keeps every body it is sent."""

    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(self.rfile.read(length))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def hook() -> Iterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []
    handler = type("H", (Hook,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()


class Flow:
    def __init__(self, client: TestClient, key: str, settings: Settings) -> None:
        self.client = client
        self.auth = {"Authorization": f"Bearer {key}"}
        self.settings = settings

    def api(self, path: str, body: Any) -> Any:
        return self.client.post(BASE + path, json=body, headers=self.auth)

    def delivered(self) -> None:
        state = self.client.app.state  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while state.recording.outbox.depth:
            assert time.monotonic() < deadline, "the forwarder did not deliver"
            time.sleep(0.02)

    def contact(self, channel: str, topic: str, line: str | None = None) -> tuple[bool, str]:
        body: dict[str, Any] = {"channel": channel, "topic": topic, "identities": [ANN]}
        if line:
            body["product_line"] = line
        result = self.api("/contactability", body).json()["results"][0]
        return result["contact"], result["reason"]


def run(flow: Flow, events: list[bytes]) -> str:
    """The customer's week, across the site, a store counter and their mailbox."""
    r = flow.client.post(
        f"{BASE}/preferences",
        json={
            "subject_secret": secret_of("ann"),
            "preferences": {
                "channels": {"email": True, "sms": True},
                "topics": {"offers": {"enabled": True}, "newsletter": {"enabled": True}},
            },
            "language": "de",
        },
        headers=ORIGIN,
    )
    assert r.status_code == 201, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN["Origin"]
    ann = str(r.json()["subject_id"])
    receipts = flow.client.app.state.recording.receipts  # type: ignore[attr-defined]
    assert receipts.verify(r.json()["receipt"]).subject_id == ann
    assert flow.api(f"/subjects/{ann}/identities", ANN).status_code == 201
    flow.delivered()
    assert flow.contact("email", "offers") == (True, "opted_in")
    assert flow.contact("sms", "newsletter") == (False, "channel_not_offered")
    assert flow.contact("sms", "offers") == (True, "opted_in")
    assert flow.contact("email", "product_updates") == (False, "topic_not_chosen")

    # At the store counter, on paper, for the shop: no SMS, offers monthly.
    r = flow.api(
        "/preferences",
        {
            "identity": ANN,
            "channel": "store",
            "preferences": {
                "channels": {"sms": False},
                "topics": {"offers": {"frequency": "monthly"}},
            },
            "evidence": {
                "collected_by": "clerk 17, Berlin Mitte",
                "method": "paper_form",
                "reference": "FORM-2026-0042",
            },
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["subject_id"] == ann
    flow.delivered()
    assert flow.contact("sms", "offers") == (False, "channel_off")
    r = flow.api("/contactability", {"channel": "email", "topic": "offers", "identities": [ANN]})
    assert r.json()["results"][0]["frequency"] == "monthly"

    state = flow.client.get(f"{BASE}/subjects/{ann}", headers=flow.auth).json()
    assert state["preferences"] == {
        "": {
            "channels": {"email": True, "sms": False},
            "topics": {
                "offers": {"enabled": True, "frequency": "monthly"},
                "newsletter": {"enabled": True, "frequency": "monthly"},  # its default
            },
        }
    }
    store_record, web_record = state["preference_history"]
    assert store_record["channel"] == "store" and store_record["actor"].startswith("api_key:")
    assert store_record["evidence"] == {
        "collected_by": "clerk 17, Berlin Mitte",
        "method": "paper_form",
        "reference": "FORM-2026-0042",
    }
    assert web_record["channel"] == "web" and web_record["language"] == "de"
    assert "ip_truncated" not in web_record
    # The subject itself reads the same with its secret (the privacy center), nobody else.
    own = {"Authorization": f"Subject {secret_of('ann')}"}
    assert (
        flow.client.get(f"{BASE}/subjects/{ann}", headers=own).json()["preferences"]
        == (state["preferences"])
    )
    other = {"Authorization": f"Subject {secret_of('bob')}"}
    assert flow.client.get(f"{BASE}/subjects/{ann}", headers=other).status_code == 403

    # The e-mail tool asks for the unsubscribe headers, the mailbox provider posts them.
    r = flow.api("/unsubscribe-links", {"identity": ANN, "topic": "offers"})
    assert r.status_code == 201, r.text
    link = r.json()
    assert link["headers"]["List-Unsubscribe"] == f"<{link['url']}>"
    assert link["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert link["url"].startswith(f"{PUBLIC}/v1/sites/demo/unsubscribe/u1.")
    assert "ann" not in link["url"].lower()
    path = link["url"].removeprefix(PUBLIC)
    page = flow.client.get(path, headers={"Accept-Language": "de"})
    assert page.status_code == 200 and "Abmelden" in page.text
    flow.delivered()
    assert flow.contact("email", "offers") == (True, "opted_in")  # opening it changed nothing
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = flow.client.post(path, content=b"List-Unsubscribe=One-Click", headers=form)
    assert r.status_code == 200 and r.json()["unsubscribed"] is True
    again = flow.client.post(path, content=b"List-Unsubscribe=One-Click", headers=form)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["record_id"] == r.json()["record_id"]
    flow.delivered()
    assert flow.contact("email", "offers") == (False, "topic_channel_off")
    assert flow.contact("email", "newsletter") == (True, "opted_in")  # that topic only
    history = flow.client.get(f"{BASE}/subjects/{ann}", headers=flow.auth).json()
    unsubscribed = history["preference_history"][0]
    assert (unsubscribed["channel"], unsubscribed["actor"]) == ("email", "unsubscribe")
    assert unsubscribed["preferences"] == {"topics": {"offers": {"channels": {"email": False}}}}
    assert unsubscribed["evidence"]["method"] == "one_click"
    check_events(events, ann)
    return ann


def check_events(bodies: list[bytes], ann: str) -> None:
    """Every change reached the webhook as an event valid against its documented schema,
    with Ann's identity as linked (a keyed hash, never her address)."""
    deadline = time.monotonic() + 10
    while sum(len(orjson.loads(b)["events"]) for b in bodies) < 4:
        assert time.monotonic() < deadline, "the webhook did not get every event"
        time.sleep(0.02)
    schemas = event_schemas()
    events = [e for b in bodies for e in orjson.loads(b)["events"]]
    for e in events:
        jsonschema.Draft202012Validator(
            schemas[e["type"]], format_checker=jsonschema.FormatChecker()
        ).validate(e)
    # Batches may arrive in any order (two forwarder workers): the ids say which is which.
    events.sort(key=lambda e: str(e["id"]))
    assert [e["type"] for e in events] == [
        "preferences.updated",  # the web
        "identity.linked",
        "preferences.updated",  # the store
        "preferences.updated",  # the unsubscribe
    ]
    assert all(e["subject"]["subject_id"] == ann for e in events)
    assert events[1]["identity"]["type"] == "email" and events[1]["identity"]["source"] == "api"
    assert [i["type"] for i in events[-1]["subject"]["identities"]] == ["email"]
    assert events[-1]["subject"]["identities"][0]["hash"] == events[1]["identity"]["hash"]
    assert all(b"ann@" not in b.lower() for b in bodies)
    store = next(e for e in events if e.get("preferences", {}).get("channel") == "store")
    assert store["preferences"]["evidence"]["reference"] == "FORM-2026-0042"


def make(tmp_path: Path, url: str, **changes: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        durability="process",
        node_id="node-p",
        public_url=PUBLIC,
        webhook_url=url,
        webhook_secret="s" * 32,
        webhook_data="events",
        **changes,
    )


def test_preferences_on_the_embedded_store(tmp_path: Path, hook: tuple[str, list[bytes]]) -> None:
    settings = make(tmp_path, hook[0])
    with TestClient(recording_app(settings), client=PEER) as client:
        run(Flow(client, new_key(settings), settings), hook[1])


@pytest.mark.postgres
def test_preferences_on_postgresql(
    tmp_path: Path,
    hook: tuple[str, list[bytes]],
    pg_dsn: str,  # noqa: F811
) -> None:
    settings = make(tmp_path, hook[0], store_url=pg_dsn)
    with TestClient(recording_app(settings), client=PEER) as client:
        ann = run(Flow(client, new_key(settings), settings), hook[1])

    async def rows() -> tuple[Any, ...]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            state = await conn.fetchval(
                "SELECT preferences FROM preference_state WHERE subject_id = $1", ann
            )
            kinds = await conn.fetch("SELECT kind, count(*) FROM audit_chain GROUP BY 1 ORDER BY 1")
            weekly = await conn.fetch(
                "SELECT identity_type FROM contact_permission_identities WHERE site = 'demo' "
                "AND channel = 'email' AND topic = 'newsletter' AND frequency = 'monthly'"
            )
        finally:
            await conn.close()
        return orjson.loads(state), [tuple(k) for k in kinds], [w[0] for w in weekly]

    state, kinds, weekly = asyncio.run(rows())
    assert state["topics"]["offers"] == {
        "enabled": True,
        "frequency": "monthly",
        "channels": {"email": False},
    }
    assert kinds == [("preference", 3)]
    assert weekly == ["email"]


def test_a_key_for_preferences_must_be_genuine_of_the_site_and_scoped(tmp_path: Path) -> None:
    """Threat: a caller without the site's key records preferences for its customers."""
    settings = Settings(data_dir=tmp_path / "data", durability="process", public_url=PUBLIC)
    good = new_key(settings)
    narrow = new_key(settings, "contactability")
    with TestClient(recording_app(settings), client=PEER) as client:
        body = {"subject_id": "0" * 32, "preferences": {"channels": {"email": True}}}

        def post(path: str, auth: str | None, data: Any = body) -> tuple[int, str]:
            headers = {} if auth is None else {"Authorization": auth}
            r = client.post(BASE + path, json=data, headers=headers)
            return r.status_code, r.json()["error"]

        assert post("/preferences", "Bearer cgk_x_y") == (401, "unauthorized")
        assert post("/preferences", f"Bearer {good}x") == (401, "unauthorized")
        assert post("/preferences", f"Bearer {narrow}") == (403, "insufficient_scope")
        # Without a key it is a browser's call, which needs the subject's secret.
        assert post("/preferences", None) == (403, "subject_secret_required")
        link = {"identity": ANN, "topic": "offers"}
        assert post("/unsubscribe-links", None, link) == (401, "unauthorized")
        state = client.app.state  # type: ignore[attr-defined]
        other = asyncio.run(_other_site_key(state.preferences.directory))
        assert post("/preferences", f"Bearer {other}") == (403, "wrong_site")
        assert post("/unsubscribe-links", f"Bearer {other}", link) == (403, "wrong_site")
        r = client.post(
            BASE + "/preferences", json=body, headers={"Authorization": f"Bearer {good}"}
        )
        assert r.status_code == 201, r.text
        # An offline channel without its evidence, or the web channel on a key: refused.
        store = {**body, "channel": "store"}
        assert post("/preferences", f"Bearer {good}", store) == (400, "missing_field")
        web = {**body, "channel": "web"}
        assert post("/preferences", f"Bearer {good}", web) == (400, "invalid_field")


async def _other_site_key(directory: Any) -> str:
    from gateway.preferences.apikeys import SCOPES, secret_hash
    from gateway.sinks.directory import StoredKey

    await directory.add_key(
        StoredKey(
            "bbbbbbbbbbbb", "other", "x", SCOPES, secret_hash("t" * 43),
            "2026-12-06T10:00:00.000000Z",
        )
    )  # fmt: skip
    return "cgk_bbbbbbbbbbbb_" + "t" * 43


def test_the_model_names_the_field_it_refuses(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", durability="process")
    with TestClient(recording_app(settings), client=PEER) as client:
        for change, code, field in [
            ({"channels": {"fax": True}}, "unknown_channel", "preferences.channels.fax"),
            ({"topics": {"spam": {"enabled": True}}}, "unknown_topic", "preferences.topics.spam"),
            (
                {"topics": {"offers": {"frequency": "hourly"}}},
                "unknown_frequency",
                "preferences.topics.offers.frequency",
            ),
        ]:
            r = client.post(
                f"{BASE}/preferences",
                json={"subject_secret": secret_of("x"), "preferences": change},
            )
            assert (r.status_code, r.json()["error"], r.json()["field"]) == (422, code, field)
        r = client.post(
            f"{BASE}/preferences",
            json={
                "subject_secret": secret_of("x"),
                "preferences": {"channels": {"email": True}},
                "product_line": "garden",
            },
        )
        assert (r.status_code, r.json()["error"]) == (422, "unknown_product_line")
        assert client.app.state.recording.outbox.depth == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_change_on_a_second_device_keeps_the_first_devices_choices(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    """One state everywhere: Ann's phone turns the newsletter on; the laptop's e-mail opt-in
    for offers still answers yes (each leaf from the device that set it last)."""
    url = request.getfixturevalue("pg_dsn") if store == "postgres" else ""
    settings = Settings(data_dir=tmp_path / "data", durability="process", store_url=url)
    with TestClient(recording_app(settings), client=PEER) as client:
        flow = Flow(client, new_key(settings), settings)
        laptop = {"channels": {"email": True}, "topics": {"offers": {"enabled": True}}}
        phone = {"topics": {"newsletter": {"enabled": True}}}
        for device, change in (("laptop", laptop), ("phone", phone)):
            r = client.post(
                f"{BASE}/preferences",
                json={"subject_secret": secret_of(device), "preferences": change},
            )
            assert r.status_code == 201, r.text
            assert (
                flow.api(f"/subjects/{r.json()['subject_id']}/identities", ANN).status_code == 201
            )
        flow.delivered()
        assert flow.contact("email", "offers") == (True, "opted_in")
        assert flow.contact("email", "newsletter") == (True, "opted_in")
