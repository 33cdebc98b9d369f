"""Hostile input on the preference and unsubscribe endpoints, property-based: never a 500,
and a refused call stores nothing (no record in the outbox or the store, no link).

Each example goes through the real app (embedded store and PostgreSQL), with a valid API key
where the endpoint takes one, so the bodies reach the parsers, the model and the outbox.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from gateway.cli.keys import create
from gateway.core.settings import Settings
from gateway.preferences.unsubscribe import UnsubscribeLinks
from tests.helpers import ROOT
from tests.pg import ADMIN_DSN, dsn_for, recording_app, secret_of
from tests.test_api_hostile import json_values

BASE = "/v1/sites/demo"
QUIET = [HealthCheck.function_scoped_fixture]
PUBLIC = "https://consent.example"
ANN = {"type": "email", "value": "ann@example.com"}
REFUSED = {400, 403, 404, 405, 409, 413, 415, 422}


class Live:
    client: TestClient
    key: str
    data: Path
    dsn: str | None = None
    link: str = ""


LIVE = Live()


async def _admin(sql: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    data = Path(tmp_path_factory.mktemp("prefs-hostile")) / "data"
    # No write limits here (they have tests of their own): every example reaches the parsers.
    settings_ = Settings(
        data_dir=data, durability="process", node_id="hostile", reload=False, public_url=PUBLIC,
        client_writes_per_minute=0, subject_writes_per_minute=0,
    )  # fmt: skip
    name = f"cg_test_{uuid.uuid4().hex[:12]}"
    if request.param == "postgres":
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        settings_ = settings_.replace(store_url=dsn_for(name))
    LIVE.dsn, LIVE.data = settings_.store_url or None, data
    try:
        lines = asyncio.run(
            create(settings_.replace(banners_dir=ROOT / "banners"), "demo", "h", [])
        )
        LIVE.key = lines[-1]
        with TestClient(recording_app(settings_)) as c:
            LIVE.client = c
            r = c.post(
                f"{BASE}/unsubscribe-links",
                json={"identity": ANN, "topic": "offers"},
                headers={"Authorization": f"Bearer {LIVE.key}"},
            )
            assert r.status_code == 201, r.text
            LIVE.link = r.json()["url"].removeprefix(PUBLIC)
            yield c
    finally:
        if request.param == "postgres":
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def appended() -> int:
    """Records the outbox has taken so far (delivered or not): nothing else appends here."""
    state = LIVE.client.app.state  # type: ignore[attr-defined]
    return int(state.recording.outbox.appended)


def send(method: str, path: str, content: bytes, content_type: str, key: bool = False) -> Any:
    headers = {"Content-Type": content_type}
    if key:
        headers["Authorization"] = f"Bearer {LIVE.key}"
    return LIVE.client.request(method, path, content=content, headers=headers)


def check(response: Any, before: int, ok: set[int]) -> None:
    """A precise 4xx or a success; a refused call appended nothing."""
    event(f"status {response.status_code}")
    assert response.status_code in ok | REFUSED, response.text
    if response.status_code >= 400:
        if response.headers["content-type"].startswith("application/json"):
            body = response.json()
            assert set(body) <= {"error", "detail", "field"} and isinstance(body["error"], str)
        assert appended() == before
    else:
        assert appended() > before or response.headers.get("idempotent-replayed") == "true"


preference_change = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "channels": st.dictionaries(
                st.sampled_from(["email", "sms", "push", "fax"]) | st.text(max_size=8),
                st.booleans() | json_values,
                max_size=4,
            )
            | json_values,
            "topics": st.dictionaries(
                st.sampled_from(["offers", "newsletter", "product_updates", "spam"]),
                st.fixed_dictionaries(
                    {},
                    optional={
                        "enabled": st.booleans() | json_values,
                        "frequency": st.sampled_from(["weekly", "monthly", "hourly"]) | json_values,
                        "channels": st.dictionaries(
                            st.sampled_from(["email", "sms"]), st.booleans(), max_size=2
                        ),
                    },
                )
                | json_values,
                max_size=3,
            )
            | json_values,
        },
    ),
)
evidence = st.one_of(
    st.none(),
    json_values,
    st.fixed_dictionaries(
        {"collected_by": st.text(max_size=250), "method": st.sampled_from(["tablet", "x"])},
        optional={"reference": st.text(max_size=20), "collected_at": st.text(max_size=30)},
    ),
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "subject_secret": st.sampled_from([secret_of("h1"), "x" * 32, ""]) | json_values,
        "subject_id": st.sampled_from(["0" * 32, "a@b.io", ""]) | json_values,
        "identity": st.sampled_from([ANN, {"type": "fax", "value": "1"}]) | json_values,
        "preferences": preference_change,
        "product_line": st.sampled_from(["shop", "insurance", "garden", ""]) | json_values,
        "channel": st.sampled_from(["web", "app", "store", "email", "callcenter", "x"])
        | json_values,
        "evidence": evidence,
        "language": st.sampled_from(["de", "pt-BR", "x" * 40]) | json_values,
        "idempotency_key": st.text(max_size=140) | json_values,
        "extra": json_values,
    },
)
content_types = st.sampled_from(
    ["application/json", "text/plain", "application/json; charset=latin-1", "text/html", ""]
)


@settings(max_examples=80, deadline=None, suppress_health_check=QUIET)
@given(body=st.one_of(bodies, json_values), ct=content_types, key=st.booleans())
def test_record_preferences(client: TestClient, body: Any, ct: str, key: bool) -> None:
    """Threat: malformed, oversized or contradictory bodies (from a browser or a CRM) crash
    the gateway, or leave half a change stored."""
    before = appended()
    r = send("POST", f"{BASE}/preferences", json.dumps(body).encode(), ct, key)
    check(r, before, {201})


def test_oversized_and_garbage_bodies(client: TestClient) -> None:
    """Threat: a body too big to hold, or not JSON, is read whole or stored."""
    before = appended()
    for content, ct, status in [
        (b"{" + b" " * 20000 + b"}", "application/json", 413),
        (b"\xff\xfe", "application/json", 400),
        (b"[]", "application/json", 400),
    ]:
        r = send("POST", f"{BASE}/preferences", content, ct)
        assert r.status_code == status, r.text
    r = send("POST", LIVE.link, b"List-Unsubscribe=One-Click&" + b"x" * 2000, "text/plain")
    assert r.status_code == 413
    assert appended() == before


@settings(max_examples=60, deadline=None, suppress_health_check=QUIET)
@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {},
            optional={
                "identity": st.sampled_from([ANN, {"type": "email", "value": "x"}]) | json_values,
                "topic": st.sampled_from(["offers", "newsletter", "spam"]) | json_values,
                "product_line": st.sampled_from(["shop", "garden"]) | json_values,
                "ttl_days": st.integers(-5, 500) | json_values,
            },
        ),
    )
)
def test_unsubscribe_links(client: TestClient, body: Any) -> None:
    before = appended()
    r = send("POST", f"{BASE}/unsubscribe-links", json.dumps(body).encode(), "application/json",
             key=True)  # fmt: skip
    assert r.status_code in {201} | REFUSED, r.text
    assert appended() == before  # asking for a link changes nothing
    if r.status_code == 201:
        assert r.json()["url"].startswith(f"{PUBLIC}{BASE}/unsubscribe/u1.")


def _forged(token: str) -> list[str]:
    """Links an attacker can make: a changed payload or signature, another site's, expired."""
    prefix, payload, signature = token.split(".")
    other = UnsubscribeLinks(b"k" * 32)
    flipped = "A" if signature[5] != "A" else "B"
    return [
        f"{prefix}.{payload[:-2]}xx.{signature}",
        f"{prefix}.{payload}.{signature[:5]}{flipped}{signature[6:]}",
        f"{prefix}.{payload}",
        other.issue("demo", ("email", "ab" * 32), "offers", "", now=int(time.time()))[0],
        "u1." + "A" * 900 + ".x",
    ]


def test_forged_expired_and_foreign_links_are_refused(client: TestClient) -> None:
    """Threat: anyone unsubscribes anyone (forged, altered or expired links, or a link of
    another site replayed here), or a mail scanner's GET unsubscribes."""
    state = client.app.state  # type: ignore[attr-defined]
    links = client.portal.call(state.preferences.unsubscribe_links)  # type: ignore[union-attr]
    token = LIVE.link.rsplit("/", 1)[1]
    expired, _ = links.issue("demo", ("email", "ab" * 32), "offers", "", now=1_000, ttl_days=1)
    foreign, _ = links.issue("shop2", ("email", "ab" * 32), "offers", "", now=int(time.time()))
    before = appended()
    for bad in [*_forged(token), expired, foreign]:
        path = f"{BASE}/unsubscribe/{bad}"
        r = send("POST", path, b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded")
        assert (r.status_code, r.json()["error"]) == (403, "invalid_unsubscribe_link"), bad
        page = client.get(path)
        assert page.status_code == 403 and "not valid" in page.text
    assert client.get(LIVE.link).status_code == 200  # the page of a good link changes nothing
    assert appended() == before
    # The right link replayed: one record, the same answer.
    form = "application/x-www-form-urlencoded"
    first = send("POST", LIVE.link, b"List-Unsubscribe=One-Click", form)
    again = send("POST", LIVE.link, b"List-Unsubscribe=One-Click", form)
    assert first.status_code == again.status_code == 200
    assert again.json()["record_id"] == first.json()["record_id"]


@settings(max_examples=60, deadline=None, suppress_health_check=QUIET)
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.sampled_from([b"List-Unsubscribe=One-Click", b"List-Unsubscribe=Two-Clicks",
                         b"page=1&frequency=hourly", b"page=1&frequency=monthly", b"a=%ff"]),
        st.text(max_size=200).map(str.encode),
    ),
    ct=st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                        "multipart/form-data", "text/plain", "application/json", ""]),
)  # fmt: skip
def test_unsubscribe_bodies(client: TestClient, content: bytes, ct: str) -> None:
    """Threat: a malformed form crashes the link or records a change it does not ask for."""
    before = appended()
    r = send("POST", LIVE.link, content, ct)
    check(r, before, {200})


@settings(max_examples=40, deadline=None, suppress_health_check=QUIET)
@given(token=st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"),
                     min_size=1, max_size=300))  # fmt: skip
def test_unsubscribe_pages(client: TestClient, token: str) -> None:
    before = appended()
    r = client.get(f"{BASE}/unsubscribe/{token}")
    assert r.status_code in {200, 403, 404}, r.text
    assert appended() == before


VALID: dict[str, dict[str, Any]] = {
    "browser": {
        "subject_secret": secret_of("h2"),
        "preferences": {"channels": {"email": True}, "topics": {"offers": {"enabled": True}}},
        "product_line": "shop",
        "channel": "app",
        "language": "de",
    },
    "api": {
        "subject_id": "0" * 32,
        "preferences": {"topics": {"newsletter": {"enabled": False, "frequency": None}}},
        "channel": "store",
        "evidence": {"collected_by": "clerk", "method": "tablet", "reference": "T-1"},
    },
}
FIELDS = sorted(
    {(caller, key) for caller, body in VALID.items() for key in body}
    | {(caller, "identity") for caller in VALID}
)


@settings(max_examples=120, deadline=None, suppress_health_check=QUIET)
@given(
    where=st.sampled_from(FIELDS),
    value=st.one_of(json_values, preference_change, evidence, st.text(max_size=50)),
    drop=st.booleans(),
)
def test_any_single_field_of_a_valid_body(
    client: TestClient, where: tuple[str, str], value: Any, drop: bool
) -> None:
    """Threat: one wrong field in an otherwise valid change slips through, half applied."""
    caller, field = where
    body = dict(VALID[caller])
    if drop:
        body.pop(field, None)
    else:
        body[field] = value
    before = appended()
    r = send("POST", f"{BASE}/preferences", json.dumps(body).encode(), "application/json",
             key=caller == "api")  # fmt: skip
    check(r, before, {201})
