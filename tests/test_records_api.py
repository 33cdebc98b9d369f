"""The recording endpoints end to end through the real app and RecordingService."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from gateway.core.model import ConsentRecord, Region
from gateway.core.settings import Settings
from gateway.recording.receipts import Receipts
from gateway.sites.catalog import load_site
from tests.helpers import shipped_rules
from tests.pg import ORIGIN, ROOT, consent_body, recording_app, secret_of
from tests.procs import free_port

BUNDLE = load_site(ROOT / "banners" / "demo", ROOT / "locales", shipped_rules())
URL = "/v1/sites/demo/consents"
PROXY = ("127.0.0.1", 50000)  # a trusted peer, so CDN geo headers count


def make_settings(tmp_path: Path, **changes: object) -> Settings:
    base = Settings(
        data_dir=tmp_path / "data",
        durability="process",
        node_id="node-a",
        trusted_proxies=("127.0.0.1",),
        geo_headers=("cloudflare",),
    )
    return base.replace(**changes)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(recording_app(make_settings(tmp_path)), client=PROXY) as c:
        yield c


def wait_delivered(client: TestClient) -> None:
    deadline = time.monotonic() + 10
    while client.app.state.recording.outbox.depth:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_post_records_and_answers_with_a_receipt(client: TestClient, tmp_path: Path) -> None:
    r = client.post(
        URL,
        json=consent_body(BUNDLE, "sub-1", page_url="https://shop.example/a"),
        headers={"Origin": ORIGIN, "Sec-GPC": "1", "CF-IPCountry": "FR", "User-Agent": "UA/1"},
    )
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"subject_id", "record_id", "recorded_at", "receipt"}
    sid = body["subject_id"]
    assert sid == client.app.state.recording.subjects.subject_id("demo", secret_of("sub-1"))  # type: ignore[attr-defined]
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["cache-control"] == "no-store"
    claims = Receipts.from_settings(make_settings(tmp_path)).verify(body["receipt"])
    assert (claims.site, claims.subject_id) == ("demo", sid)
    assert claims.record_id == body["record_id"]

    wait_delivered(client)
    h = client.get(
        f"/v1/sites/demo/subjects/{sid}/consents",
        headers={"Authorization": f"Bearer {body['receipt']}", "Origin": ORIGIN},
    )
    assert h.status_code == 200
    data = h.json()
    assert data["choices"] == {
        "necessary": True,
        "analytics": True,
        "marketing": True,
        "personalization": True,
    }
    stored = data["current"]
    assert stored["record_id"] == body["record_id"]
    assert (stored["gpc"], stored["region_country"]) == (True, "FR")
    # Threat: a leaked credential reveals the device and the visit (review §4d): the subject
    # API leaves them out; the store keeps them as proof.
    assert not {"user_agent", "ip_truncated", "page_url"} & set(stored)
    recording = client.app.state.recording  # type: ignore[attr-defined]
    assert client.portal is not None
    history = client.portal.call(recording.history, "demo", sid)
    stored = history["current"]
    assert (stored["user_agent"], stored["page_url"]) == ("UA/1", "https://shop.example/a")
    assert (stored["node_id"], stored["origin"], stored["banner_version"]) == (
        "node-a",
        ORIGIN,
        BUNDLE.banner_version,
    )
    assert stored["consent_revision"] == BUNDLE.consent_revision
    signer = Receipts.from_settings(make_settings(tmp_path))
    assert signer.proves(body["receipt"], ConsentRecord.from_json(stored))


def test_beacon_text_plain_is_accepted(client: TestClient) -> None:
    r = client.post(
        URL,
        content=orjson.dumps(consent_body(BUNDLE, "beacon", "reject_all")),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN},
    )
    assert r.status_code == 201


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "field"),
    [
        ({"content": b"{", "headers": {"Content-Type": "application/json"}},
         400, "invalid_json", None),
        ({"content": b"{}", "headers": {"Content-Type": "application/xml"}},
         415, "unsupported_media_type", None),
        ({"content": b"x" * 20000, "headers": {"Content-Type": "application/json"}},
         413, "body_too_large", None),
        ({"json": {**consent_body(BUNDLE, "s"), "banner_version": "gone"}},
         422, "unknown_banner_version", "banner_version"),
        ({"json": {**consent_body(BUNDLE, "s"), "choices": {"analytics": True}}},
         422, "missing_choice", "choices.marketing"),
        ({"json": consent_body(BUNDLE, "s"), "headers": {"Origin": "https://evil.example"}},
         403, "origin_not_allowed", None),
    ],
)  # fmt: skip
def test_bad_requests_are_json_and_record_nothing(
    client: TestClient, kwargs: dict[str, object], status: int, code: str, field: str | None
) -> None:
    r = client.post(URL, **kwargs)
    assert r.status_code == status
    assert r.json()["error"] == code
    assert r.json().get("field") == field
    assert client.app.state.recording.outbox.depth == 0  # type: ignore[attr-defined]
    assert client.app.state.recording.outbox.commits == 0  # type: ignore[attr-defined]


def test_unknown_site_is_404(client: TestClient) -> None:
    r = client.post("/v1/sites/nope/consents", json=consent_body(BUNDLE, "s"))
    assert (r.status_code, r.json()["error"]) == (404, "unknown_site")


def test_preflight_only_for_allowed_origins(client: TestClient) -> None:
    ok = client.options(URL, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "Origin" in ok.headers["vary"]
    # No cookies are read anywhere, so no allowed origin is ever granted credentials.
    assert "access-control-allow-credentials" not in ok.headers
    posted = client.post(URL, json=consent_body(BUNDLE, "cors"), headers={"Origin": ORIGIN})
    assert posted.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in posted.headers
    bad = client.options(
        URL, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert bad.status_code == 403
    assert "access-control-allow-origin" not in bad.headers


def test_same_idempotency_key_returns_the_same_receipt(client: TestClient) -> None:
    body = consent_body(BUNDLE, "sub-2", idempotency_key="click-42")
    first = client.post(URL, json=body)
    again = client.post(URL, json=body)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    wait_delivered(client)
    h = client.get(
        f"/v1/sites/demo/subjects/{first.json()['subject_id']}/consents",
        headers={"Authorization": "Bearer " + first.json()["receipt"]},
    )
    assert len(h.json()["history"]) == 1


def test_receipt_in_the_query_is_refused(client: TestClient) -> None:
    """Receipts-in-logs threat: a ?receipt= URL lands in access and proxy logs, so the
    gateway never reads one from the query (the privacy center sends it as a header)."""
    mine = client.post(URL, json=consent_body(BUNDLE, "sub-q")).json()
    path = f"/v1/sites/demo/subjects/{mine['subject_id']}/consents"
    h = client.get(path, params={"receipt": mine["receipt"]})
    assert h.status_code == 403 and "?receipt" not in h.json()["detail"]


def test_history_needs_a_receipt_of_that_subject(client: TestClient) -> None:
    mine = client.post(URL, json=consent_body(BUNDLE, "sub-3")).json()
    receipt = mine["receipt"]
    other = client.post(URL, json=consent_body(BUNDLE, "sub-4")).json()["receipt"]
    base = f"/v1/sites/demo/subjects/{mine['subject_id']}/consents"
    cases = [
        ({}, "receipt_required"),
        ({"Authorization": f"Bearer {other}"}, "forbidden"),
        ({"Authorization": f"Bearer {receipt[:-3]}xyz"}, "invalid_receipt"),
        ({"Authorization": "Basic abc"}, "receipt_required"),
    ]
    for headers, code in cases:
        r = client.get(base, headers=headers)
        assert (r.status_code, r.json()["error"]) == (403, code)
    assert client.get(base, headers={"Authorization": f"Bearer {receipt}"}).status_code == 200


def test_full_outbox_answers_503_with_retry_after(tmp_path: Path) -> None:
    # The store is unreachable, so nothing drains and the one-record outbox stays full (the
    # receipt key is set: this new node cannot read the shared one from that store).
    settings = make_settings(
        tmp_path, outbox_max_records=1, receipt_key="k" * 32,
        store_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none", shutdown_drain=0.1,
    )  # fmt: skip
    with TestClient(recording_app(settings), client=PROXY) as client:
        first = client.post(URL, json=consent_body(BUNDLE, "a"))
        assert first.status_code == 201
        r = client.post(URL, json=consent_body(BUNDLE, "b"))
        assert r.status_code == 503
        assert r.json()["error"] == "unavailable"
        assert int(r.headers["retry-after"]) > 0
        health = client.app.state.recording.health()  # type: ignore[attr-defined]
        assert health["outbox_depth"] == 1
        assert health["outbox_writable"] is True
        # Reading history needs the store: unreachable is a 503, never a 500.
        h = client.get(
            f"/v1/sites/demo/subjects/{first.json()['subject_id']}/consents",
            headers={"Authorization": "Bearer " + first.json()["receipt"]},
        )
        assert h.status_code == 503
        assert "retry-after" in h.headers


@pytest.mark.parametrize(
    ("length", "status"), [("²", 400), ("-1", 400), ("x", 400), ("99999999999999999999", 413)]
)
def test_bogus_content_length_is_a_client_error(
    client: TestClient, length: str, status: int
) -> None:
    r = client.post(
        URL,
        content=orjson.dumps(consent_body(BUNDLE, "cl")),
        headers={"Content-Type": "application/json", "Content-Length": length.encode("latin-1")},
    )
    assert r.status_code == status


def test_each_request_gets_its_own_region_language_and_gpc(client: TestClient) -> None:
    # The gateway remembers visitor facts per (region, Accept-Language, Sec-GPC): repeats and
    # interleavings must still record what each request said.
    cases = [
        ("FR", "de-DE,de;q=0.9", "1", "de", True),
        ("FR", "de-DE,de;q=0.9", None, "de", False),
        ("US", "de-DE,de;q=0.9", "1", "de", True),
        ("FR", "pt-BR", None, "pt_BR", False),
        ("FR", "de-DE,de;q=0.9", "1", "de", True),
        ("JP", "xx", "0", "en", False),
        (
            "FR",
            "de-DE,de;q=0.9," + ",".join([f"zz-abcdefgh-{i:08d}" for i in range(15)]),
            "1",
            "de",
            True,
        ),  # too long to be remembered
        ("FR", "pt-BR", "1", "pt_BR", True),
    ]
    receipts = []
    for i, (country, accept, gpc, _, _) in enumerate(cases):
        headers = {"Origin": ORIGIN, "CF-IPCountry": country, "Accept-Language": accept}
        if gpc is not None:
            headers["Sec-GPC"] = gpc
        # reject_all: in JP an accept_all may not carry the separate marketing consent.
        body = consent_body(BUNDLE, f"visitor-{i}", "reject_all")
        body.pop("language", None)
        r = client.post(URL, json=body, headers=headers)
        assert r.status_code == 201
        receipts.append((r.json()["subject_id"], r.json()["receipt"]))
    wait_delivered(client)
    for i, (country, _, _, language, gpc_set) in enumerate(cases):
        h = client.get(
            f"/v1/sites/demo/subjects/{receipts[i][0]}/consents",
            headers={"Authorization": f"Bearer {receipts[i][1]}"},
        )
        stored = h.json()["current"]
        rule = BUNDLE.rules.rule(Region(country=country, source="header"))
        assert (stored["region_country"], stored["rule_id"]) == (country, rule.id)
        assert (stored["language"], stored["gpc"]) == (language, gpc_set)


@pytest.mark.parametrize(
    ("country", "body_changes", "status", "code"),
    [
        # PIPL Arts. 23, 39: the separate marketing consent is never part of accept_all.
        ("CN", {}, 422, "separate_consent_bundled"),
        ("CN", {"choices": {"analytics": True, "marketing": False, "personalization": True}},
         201, None),
        ("CN", {"action": "custom"}, 201, None),  # its own act, recorded as custom
        # Md. Com. Law 14-4607(a)(5): no sale of a known minor's data, whatever the consent.
        ("US", {"age": 16}, 422, "prohibited_purpose"),
        ("US", {"age": 40}, 201, None),
        ("US", {"age": "16"}, 400, "invalid_field"),
    ],
)  # fmt: skip
def test_records_are_checked_against_the_visitors_rule(
    client: TestClient, country: str, body_changes: dict[str, object], status: int, code: str
) -> None:
    body = {**consent_body(BUNDLE, f"rule-{country}-{status}"), **body_changes}
    if body.get("action") == "custom":
        body["choices"] = {p.id: True for p in BUNDLE.site.optional_purposes}
    headers = {"Origin": ORIGIN, "CF-IPCountry": country}
    if country == "US":
        headers["cf-region-code"] = "MD"
    r = client.post(URL, json=body, headers=headers)
    assert r.status_code == status, r.text
    if code:
        assert r.json()["error"] == code
        assert r.json()["field"] in ("choices.marketing", "age")
