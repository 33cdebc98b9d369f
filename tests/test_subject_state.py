"""The snippet's conditional check of its subject's state: the subject reads its own state with
its secret, the ETag is the state's revision, and an unchanged state answers 304."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from gateway.core.settings import Settings
from gateway.sites.catalog import load_site
from gateway.web.api import state_etag
from tests.helpers import shipped_rules
from tests.pg import ROOT, consent_body, recording_app, secret_of

BUNDLE = load_site(ROOT / "banners" / "demo", ROOT / "locales", shipped_rules())
URL = "/v1/sites/demo/consents"
SITE_ORIGIN = "http://localhost:8000"  # in the demo site's allowed_origins


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", durability="process")
    with TestClient(recording_app(settings)) as c:
        yield c


def drained(client: TestClient) -> None:
    deadline = time.monotonic() + 10
    while client.app.state.recording.outbox.depth:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.01)


def state_url(subject_id: str) -> str:
    return f"/v1/sites/demo/subjects/{subject_id}"


def own(name: str, **extra: str) -> dict[str, str]:
    return {"Authorization": "Subject " + secret_of(name), **extra}


def test_the_subject_reads_its_state_and_gets_304_while_unchanged(client: TestClient) -> None:
    first = client.post(URL, json=consent_body(BUNDLE, "ann")).json()
    drained(client)
    url = state_url(first["subject_id"])
    state = client.get(url, headers=own("ann"))
    assert state.status_code == 200
    body = state.json()
    assert body["consents"]["analytics"] is True
    assert body["consent_action"] == "accept_all"
    assert body["consent_revision"] == BUNDLE.consent_revision
    # The revision the snippet works out from its own record's recorded_at.
    assert state.headers["etag"] == state_etag(first["recorded_at"])
    assert state.headers["cache-control"] == "private, no-cache"
    same = client.get(url, headers=own("ann", **{"If-None-Match": state.headers["etag"]}))
    assert (same.status_code, same.content) == (304, b"")
    # A withdrawal made on another channel changes the revision.
    client.post(URL, json=consent_body(BUNDLE, "ann", "reject_all", channel="app"))
    drained(client)
    changed = client.get(url, headers=own("ann", **{"If-None-Match": state.headers["etag"]}))
    assert changed.status_code == 200
    assert changed.json()["consents"]["analytics"] is False
    assert changed.json()["consent_action"] == "reject_all"
    assert changed.headers["etag"] != state.headers["etag"]


def test_a_site_page_may_ask_cross_origin_with_a_preflight(client: TestClient) -> None:
    first = client.post(URL, json=consent_body(BUNDLE, "bea")).json()
    drained(client)
    url = state_url(first["subject_id"])
    pre = client.options(
        url,
        headers={
            "Origin": SITE_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, if-none-match",
        },
    )
    assert pre.status_code == 204
    assert "If-None-Match" in pre.headers["access-control-allow-headers"]
    got = client.get(url, headers=own("bea", Origin=SITE_ORIGIN))
    assert got.headers["access-control-allow-origin"] == SITE_ORIGIN
    unchanged = client.get(
        url, headers=own("bea", Origin=SITE_ORIGIN, **{"If-None-Match": got.headers["etag"]})
    )
    assert unchanged.status_code == 304
    assert unchanged.headers["access-control-allow-origin"] == SITE_ORIGIN
    # Nothing stored for the subject (yet): a 404 the page can read, not a failure.
    keys = client.app.state.recording.subject_keys()  # type: ignore[attr-defined]
    unknown = client.get(
        state_url(keys.subject_id("demo", secret_of("zed"))), headers=own("zed", Origin=SITE_ORIGIN)
    )
    assert unknown.status_code == 404
    assert unknown.headers["access-control-allow-origin"] == SITE_ORIGIN


def test_another_subjects_secret_or_another_origin_reads_nothing(client: TestClient) -> None:
    """Threats: a secret of one subject reads another's state; a page of an origin the site does
    not allow reads a visitor's state; a malformed credential."""
    first = client.post(URL, json=consent_body(BUNDLE, "cat")).json()
    client.post(URL, json=consent_body(BUNDLE, "dog"))
    drained(client)
    url = state_url(first["subject_id"])
    wrong = client.get(url, headers=own("dog"))
    assert (wrong.status_code, wrong.json()["error"]) == (403, "subject_secret_mismatch")
    evil = client.get(url, headers=own("cat", Origin="https://evil.example"))
    assert evil.status_code == 403
    assert "access-control-allow-origin" not in evil.headers
    assert client.get(url, headers={"Authorization": "Subject x"}).status_code == 400
    assert client.get(url).status_code == 401  # no credential: the API key path
    assert client.get(state_url("not-an-id"), headers=own("cat")).status_code == 403


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    inm=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200),
    subject=st.text(min_size=1, max_size=40),
)
def test_hostile_if_none_match_and_ids_never_500(
    client: TestClient, inm: str, subject: str
) -> None:
    """Threat: hostile header values and path ids crash the check."""
    headers = own("cat", **{"If-None-Match": inm})
    response = client.get(state_url(quote(subject, safe="")), headers=headers)
    assert response.status_code < 500
