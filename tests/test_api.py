"""The server-to-server API through the real app, on the embedded store and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.cli.keys import create
from gateway.core.errors import BadRequest, ConfigError
from gateway.core.settings import Settings, load_settings
from gateway.preferences.apikeys import SCOPES, secret_hash
from gateway.sinks.directory import PreferenceState, StoredKey
from tests.pg import consent_body, pg_dsn, recording_app, secret_of  # noqa: F401

S1 = secret_of("s1")

BASE = "/v1/sites/demo"
PEER = ("127.0.0.1", 50000)


def make_settings(tmp_path: Path, **changes: object) -> Settings:
    base = Settings(data_dir=tmp_path / "data", durability="process", node_id="node-a")
    return base.replace(**changes)


def new_key(settings: Settings, *scopes: str) -> str:
    """A key made by the CLI's code: its last line is the key."""
    root = Path(__file__).resolve().parent.parent
    lines = asyncio.run(
        create(settings.replace(banners_dir=root / "banners"), "demo", "test", scopes)
    )
    return lines[-1]


class Api:
    """A client with a key of the demo site, and shortcuts into the app's state."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client = client
        self.auth = {"Authorization": f"Bearer {key}"}

    def post(self, path: str, body: Any, **headers: str) -> Any:
        return self.client.post(BASE + path, json=body, headers={**self.auth, **headers})

    def get(self, path: str, **params: str) -> Any:
        return self.client.get(BASE + path, params=params, headers=self.auth)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a coroutine function on the app's event loop."""
        assert self.client.portal is not None
        return self.client.portal.call(fn, *args)

    def state(self) -> Any:
        return self.client.app.state  # type: ignore[attr-defined]

    def write_preferences(self, *states: PreferenceState) -> None:
        self.call(self.state().preferences.directory.write_preferences, list(states))


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    settings = make_settings(tmp_path)
    key = new_key(settings)
    with TestClient(recording_app(settings), client=PEER) as client:
        yield Api(client, key)


def ann_prefs(email: bool = True) -> dict[str, Any]:
    return {
        "channels": {"email": email, "sms": False},
        "topics": {
            "offers": {"enabled": True, "frequency": "monthly"},
            "newsletter": {"enabled": False},
        },
    }


def run_flow(api: Api) -> None:
    """Link, read back, find by identity, token, contactability: the CRM's day."""
    # The subject id is the one the gateway derived from Ann's browser secret.
    recorded = api.client.post(
        f"{BASE}/consents", json=consent_body(api.state().gateway.catalog.get("demo"), "sub-ann")
    )
    assert recorded.status_code == 201
    ann = recorded.json()["subject_id"]
    r = api.post(f"/subjects/{ann}/identities", {"type": "email", "value": " Ann@Example.com"})
    assert r.status_code == 201 and r.json() == {
        "subject_id": ann,
        "type": "email",
        "linked": True,
    }
    assert (
        api.post(
            f"/subjects/{ann}/identities", {"type": "phone", "value": "+49 30 1234567"}
        ).status_code
        == 201
    )
    api.write_preferences(
        PreferenceState("demo", ann, "", ann_prefs(), "r-1", "2026-12-06T10:00:00.000000Z")
    )
    deadline = time.monotonic() + 10
    while (body := api.get(f"/subjects/{ann}").json()).get("consents") is None:
        assert time.monotonic() < deadline  # the forwarder delivers the consent
        time.sleep(0.02)
    assert body["identities"] == ["email", "phone"]
    assert body["consents"]["marketing"] is True
    assert body["preferences"] == {"": ann_prefs()}
    assert body["consent_record_id"] == recorded.json()["record_id"]

    found = api.get("/subjects", identity="email:ann@example.COM")
    assert found.status_code == 200
    assert [s["subject_id"] for s in found.json()["subjects"]] == [ann]
    assert api.get("/subjects", identity="email:nobody@example.com").json() == {"subjects": []}

    r = api.post(
        "/contactability",
        {
            "channel": "email",
            "topic": "offers",
            "identities": [
                {"type": "email", "value": "ANN@example.com"},
                {"type": "email", "value": "nobody@example.com"},
                {"type": "phone", "value": "+493012345 67"},
                {"type": "email", "value": "broken"},
                {"type": "fax", "value": "1"},
            ],
        },
    )
    assert r.status_code == 200
    results = r.json()["results"]
    assert [(x["contact"], x["reason"]) for x in results] == [
        (True, "opted_in"),
        (False, "unknown_identity"),
        (True, "opted_in"),
        (False, "invalid_identity"),
        (False, "invalid_identity"),
    ]
    assert results[0]["identity"] == {"type": "email", "value": "ANN@example.com"}
    assert results[0]["frequency"] == "monthly"
    assert results[3]["detail"] == "not an e-mail address" and "detail" not in results[0]
    r = api.post(
        "/contactability",
        {
            "channel": "email",
            "topic": "newsletter",
            "identities": [{"type": "email", "value": "ann@example.com"}],
        },
    )
    assert r.json()["results"][0]["reason"] == "topic_off"

    r = api.post(
        "/identity-tokens",
        {"identities": [{"type": "email", "value": "ann@example.com"}], "ttl_seconds": 120},
    )
    assert r.status_code == 201 and r.json()["expires_in"] == 120
    token = r.json()["token"]
    assert "ann" not in token
    # Device B's snippet presents the token: linked, and it gets the customer's choices.
    browser = {"Origin": "http://127.0.0.1:8000"}
    identify = {"subject_secret": secret_of("device-b"), "token": token}
    r = api.client.post(f"{BASE}/identify", json=identify, headers=browser)
    device_b = r.json()["subject_id"]
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    assert r.json() == {
        "subject_id": device_b,
        "identities": ["email"],
        "consents": body["consents"],
        "consent_record_id": recorded.json()["record_id"],
        "consent_recorded_at": recorded.json()["recorded_at"],
        "consent_action": body["consent_action"],
        "consent_revision": body["consent_revision"],
        "preferences": {"": ann_prefs()},
    }
    again = api.client.post(
        f"{BASE}/identify",
        json={**identify, "subject_secret": secret_of("device-c")},
        headers=browser,
    )
    assert (again.status_code, again.json()["error"]) == (403, "token_replayed")
    # The page may read why (CORS on the error too), so the snippet can tell the site.
    assert again.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    found = api.get("/subjects", identity="email:ann@example.com").json()["subjects"]
    assert {s["subject_id"] for s in found} == {ann, device_b}


def test_the_crm_flow_on_the_embedded_store(api: Api) -> None:
    run_flow(api)


@pytest.mark.postgres
def test_the_crm_flow_on_postgresql(tmp_path: Path, pg_dsn: str) -> None:  # noqa: F811
    settings = make_settings(tmp_path, store_url=pg_dsn)
    key = new_key(settings)
    with TestClient(recording_app(settings), client=PEER) as client:
        run_flow(Api(client, key))


ENDPOINTS = [
    ("POST", "/identity-tokens", {"identities": [{"type": "email", "value": "a@b.io"}]}),
    ("POST", "/subjects/sub-1/identities", {"type": "email", "value": "a@b.io"}),
    ("GET", "/subjects?identity=email:a@b.io", None),
    ("GET", "/subjects/sub-1", None),
    (
        "POST",
        "/contactability",
        {
            "channel": "email",
            "topic": "offers",
            "identities": [{"type": "email", "value": "a@b.io"}],
        },
    ),
]


def call(api: Api, method: str, path: str, body: Any, auth: str | None) -> Any:
    headers = {} if auth is None else {"Authorization": auth}
    return api.client.request(method, BASE + path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_endpoint_wants_a_valid_key_of_its_site(
    api: Api, method: str, path: str, body: Any
) -> None:
    """Threat: a caller without the site's key reads or links customers' identities."""
    service = api.state().preferences
    good = api.auth["Authorization"].removeprefix("Bearer ")
    for auth in (
        None,
        "",
        "Bearer",
        "Basic " + good,
        f"Bearer {good}x",
        "Bearer cgk_x_y",
        f"Bearer {good[:-4]}AAAA",
        "Bearer cgk_ffffffffffff_" + good[-43:],
    ):
        r = call(api, method, path, body, auth)
        assert r.status_code == 401, (auth, r.text)
        assert r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
    other = StoredKey(
        "aaaaaaaaaaaa",
        "other-site",
        "x",
        SCOPES,
        secret_hash("s" * 43),
        "2026-12-06T10:00:00.000000Z",
    )
    api.call(service.directory.add_key, other)
    r = call(api, method, path, body, "Bearer cgk_aaaaaaaaaaaa_" + "s" * 43)
    assert (r.status_code, r.json()["error"]) == (403, "wrong_site")
    assert call(api, method, path, body, f"Bearer {good}").status_code in (200, 201, 404)


def test_a_key_without_the_scope_is_403(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    key = new_key(settings, "subjects:read")
    with TestClient(recording_app(settings), client=PEER) as client:
        api = Api(client, key)
        r = api.post("/contactability", ENDPOINTS[-1][2])
        assert (r.status_code, r.json()["error"]) == (403, "insufficient_scope")
        assert api.get("/subjects", identity="email:a@b.io").status_code == 200


def test_a_revoked_key_is_refused(tmp_path: Path) -> None:
    from gateway.cli.keys import revoke

    settings = make_settings(tmp_path)
    key = new_key(settings)
    asyncio.run(revoke(settings, key.split("_")[1]))
    with TestClient(recording_app(settings), client=PEER) as client:
        r = Api(client, key).get("/subjects", identity="email:a@b.io")
        assert (r.status_code, r.json()["error"]) == (401, "unauthorized")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/identity-tokens", {"identities": []}, 400, "invalid_field"),
        (
            "POST",
            "/identity-tokens",
            {"identities": [{"type": "email", "value": "x"}]},
            422,
            "invalid_identity",
        ),
        (
            "POST",
            "/identity-tokens",
            {"identities": [{"type": "email", "value": "a@b.io"}], "ttl_seconds": 7200},
            400,
            "invalid_field",
        ),
        (
            "POST",
            "/identity-tokens",
            {"identities": [{"type": "email", "value": "a@b.io"}], "subject_id": "bad id"},
            400,
            "invalid_field",
        ),
        ("POST", "/identity-tokens", {"nope": 1}, 400, "unknown_field"),
        (
            "POST",
            "/subjects/bad%20id/identities",
            {"type": "email", "value": "a@b.io"},
            400,
            "invalid_field",
        ),
        (
            "POST",
            "/subjects/ann@example.com/identities",
            {"type": "email", "value": "ann@example.com"},
            422,
            "subject_id_is_an_identity",
        ),
        ("GET", "/subjects/+49301234567", None, 422, "subject_id_is_an_identity"),
        ("GET", "/subjects?identity=nocolon", None, 422, "invalid_identity"),
        ("GET", "/subjects", None, 400, "invalid_parameter"),
        ("GET", "/subjects/never-seen", None, 404, "unknown_subject"),
        (
            "POST",
            "/contactability",
            {"channel": "fax", "topic": "offers", "identities": []},
            422,
            "unknown_channel",
        ),
        (
            "POST",
            "/contactability",
            {"channel": "email", "topic": "offers", "identities": [{}] * 1001},
            400,
            "invalid_field",
        ),
    ],
)
def test_errors_name_the_field(
    api: Api, method: str, path: str, body: Any, status: int, code: str
) -> None:
    r = api.client.request(method, BASE + path, json=body, headers=api.auth)
    assert (r.status_code, r.json()["error"]) == (status, code), r.text


def test_bodies_must_be_small_json_objects(api: Api) -> None:
    url = BASE + "/contactability"
    for content, ctype, status, code in (
        (b"{}", "text/plain", 415, "unsupported_media_type"),
        (b"{nope", "application/json", 400, "invalid_json"),
        (b"[1]", "application/json", 400, "invalid_body"),
        (b"{" + b" " * 300_000 + b"}", "application/json", 413, "body_too_large"),
    ):
        r = api.client.post(url, content=content, headers={**api.auth, "Content-Type": ctype})
        assert (r.status_code, r.json()["error"]) == (status, code)
    r = api.client.post(BASE + "/contactability", json={}, headers=api.auth)
    assert r.status_code == 422
    r = api.client.get("/v1/sites/nope/subjects/x", headers=api.auth)
    assert (r.status_code, r.json()["error"]) == (404, "unknown_site")


def test_a_short_identity_key_is_refused_before_serving(tmp_path: Path) -> None:
    """Threat: a guessable key makes the stored hashes reversible by brute force."""
    with pytest.raises(ConfigError, match="32 bytes"):
        load_settings(env={"GATEWAY_IDENTITY_KEY": "short"})
    assert load_settings(env={"GATEWAY_IDENTITY_KEY": "k" * 32}).identity_key == "k" * 32
    with (
        pytest.raises(ConfigError, match="32 bytes"),
        TestClient(recording_app(make_settings(tmp_path, identity_key="short"))),
    ):
        pass


@pytest.mark.postgres
def test_two_nodes_sharing_postgresql_share_keys_and_identities(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811
) -> None:
    """A key made once works on every node, and an identity linked on one is found on the
    other: the identity key both hash with was generated once, into the shared store."""
    node_a = make_settings(tmp_path / "a", store_url=pg_dsn, node_id="node-a")
    node_b = make_settings(tmp_path / "b", store_url=pg_dsn, node_id="node-b")
    key = new_key(node_a)
    with (
        TestClient(recording_app(node_a), client=PEER) as a,
        TestClient(recording_app(node_b), client=PEER) as b,
    ):
        api_a, api_b = Api(a, key), Api(b, key)
        r = api_a.post("/subjects/sub-x/identities", {"type": "customer_id", "value": "C-7"})
        assert r.status_code == 201
        found = api_b.get("/subjects", identity="customer_id:C-7").json()["subjects"]
        assert [s["subject_id"] for s in found] == ["sub-x"]
        token = api_b.post(
            "/identity-tokens", {"identities": [{"type": "customer_id", "value": "C-7"}]}
        ).json()["token"]
        api_a.call(api_a.state().preferences.redeem_token, "demo", token, "sub-y")
        with pytest.raises(BadRequest):  # replayed on the other node
            api_b.call(api_b.state().preferences.redeem_token, "demo", token, "sub-z")


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        ({"subject_secret": S1, "token": "it1.x.y"}, {}, 403, "invalid_identity_token"),
        (
            {"subject_secret": S1, "token": "it1.x.y"},
            {"Origin": "https://evil.example"},
            403,
            "origin_not_allowed",
        ),
        # Threat: a page links a subject it only knows the id of (or an e-mail address).
        ({"subject_id": "ann@example.com", "token": "t"}, {}, 403, "subject_secret_required"),
        (
            {"subject_id": "0" * 32, "subject_secret": S1, "token": "t"},
            {},
            403,
            "subject_secret_mismatch",
        ),
        ({"subject_secret": S1}, {}, 400, "invalid_field"),
        ({"token": "t"}, {}, 400, "missing_field"),
        ({"subject_secret": S1, "token": "t", "key": "x"}, {}, 400, "unknown_field"),
    ],
)
def test_identify_refuses_what_is_not_a_fresh_token_of_the_site(
    api: Api, body: dict[str, str], headers: dict[str, str], status: int, code: str
) -> None:
    """Threat: a browser claims an identity it was not given, or a page of another origin
    links its visitor to a customer."""
    r = api.client.post(f"{BASE}/identify", json=body, headers=headers)
    assert (r.status_code, r.json()["error"]) == (status, code)


def test_a_token_bound_to_a_subject_identifies_only_that_subject(api: Api) -> None:
    # The site's backend binds the token to the id the snippet's subject secret derives to.
    sub_1 = api.state().recording.subjects.subject_id("demo", secret_of("sub-1"))
    r = api.post(
        "/identity-tokens",
        {"identities": [{"type": "customer_id", "value": "C-1"}], "subject_id": sub_1},
    )
    token = r.json()["token"]
    other = api.client.post(
        f"{BASE}/identify", json={"subject_secret": secret_of("sub-2"), "token": token}
    )
    assert (other.status_code, other.json()["error"]) == (403, "invalid_identity_token")
    mine = api.client.post(
        f"{BASE}/identify", json={"subject_secret": secret_of("sub-1"), "token": token}
    )
    assert mine.status_code == 200 and mine.json()["consents"] is None
    preflight = api.client.options(
        f"{BASE}/identify",
        headers={"Origin": "http://127.0.0.1:8000", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
