"""Subjects are capabilities (security review §4d): a subject id opens nothing without the
subject's secret, ids cannot be chosen, and receipts read history only while fresh."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from gateway.core.errors import BadRequest
from gateway.core.settings import Settings
from gateway.recording.receipts import (
    READ_LIFETIME_SECONDS,
    InvalidReceipt,
    ReceiptClaims,
    Receipts,
    check_read_lifetime,
)
from gateway.recording.subjects import SubjectKeys, secret_from_authorization
from gateway.sites.catalog import load_site
from tests.helpers import shipped_rules
from tests.pg import ROOT, consent_body, drained, recording_app, secret_of

BUNDLE = load_site(ROOT / "banners" / "demo", ROOT / "locales", shipped_rules())
URL = "/v1/sites/demo/consents"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", durability="process")
    with TestClient(recording_app(settings)) as c:
        yield c


def history_url(subject_id: str) -> str:
    return f"/v1/sites/demo/subjects/{subject_id}/consents"


def test_the_subject_id_is_derived_per_site_and_cannot_be_chosen() -> None:
    # Threat: a client picks a subject id (an e-mail address, or a victim's id).
    keys = SubjectKeys(b"k" * 32)
    secret = secret_of("alice")
    sid = keys.subject_id("demo", secret)
    assert len(sid) == 32 and sid == keys.subject_id("demo", secret)
    # Threat: one secret links a visitor across two sites of the same gateway.
    assert keys.subject_id("other", secret) != sid
    assert SubjectKeys(b"j" * 32).subject_id("demo", secret) != sid


def test_writing_for_a_known_subject_id_without_its_secret_is_refused(
    client: TestClient,
) -> None:
    victim = client.post(URL, json=consent_body(BUNDLE, "victim"))
    assert victim.status_code == 201
    sid = victim.json()["subject_id"]
    # Threat (§4d): the attacker knows only the id and overwrites the victim's choice.
    body = consent_body(BUNDLE, "x", "reject_all")
    del body["subject_secret"]
    forged = client.post(URL, json={**body, "subject_id": sid})
    assert (forged.status_code, forged.json()["error"]) == (403, "subject_secret_required")
    # ... or pairs the id with a secret of their own.
    mixed = client.post(URL, json={**consent_body(BUNDLE, "attacker"), "subject_id": sid})
    assert (mixed.status_code, mixed.json()["error"]) == (403, "subject_secret_mismatch")
    # Threat: a raw identity stored as a subject id.
    email = client.post(URL, json={**body, "subject_id": "alice@example.com"})
    assert email.status_code == 403
    assert client.app.state.recording.outbox.commits == 1  # type: ignore[attr-defined]
    # The holder of the secret writes with or without naming the id.
    own = client.post(URL, json={**consent_body(BUNDLE, "victim", "reject_all"), "subject_id": sid})
    assert (own.status_code, own.json()["subject_id"]) == (201, sid)


def test_reading_needs_the_secret_or_a_fresh_receipt_of_that_subject(client: TestClient) -> None:
    mine = client.post(URL, json=consent_body(BUNDLE, "reader")).json()
    other = client.post(URL, json=consent_body(BUNDLE, "someone-else")).json()
    drained(client)
    url = history_url(mine["subject_id"])
    ok = client.get(url, headers={"Authorization": "Subject " + secret_of("reader")})
    assert ok.status_code == 200 and len(ok.json()["history"]) == 1
    # Threat: another subject's secret, or a malformed one, reads this subject's history.
    wrong = client.get(url, headers={"Authorization": "Subject " + secret_of("someone-else")})
    assert (wrong.status_code, wrong.json()["error"]) == (403, "subject_secret_mismatch")
    bad = client.get(url, headers={"Authorization": "Subject alice@example.com"})
    assert bad.status_code == 400
    # Threat: another subject's genuine receipt.
    theirs = client.get(url, headers={"Authorization": "Bearer " + other["receipt"]})
    assert theirs.status_code == 403
    # Threat: enumerating history by identity-shaped ids; they are never ids here.
    email = client.get(history_url("alice@example.com"), headers={"Authorization": "Subject x"})
    assert email.status_code == 404


def test_a_receipt_reads_history_only_while_fresh() -> None:
    # Threat: a receipt left in a mail, a log or a shared device opens the history for ever.
    receipts = Receipts(b"k" * 32)

    claims = ReceiptClaims("demo", "a" * 32, "r", "2026-01-01T00:00:00.000000Z", "h")
    issued = 1767225600.0  # 2026-01-01T00:00:00Z
    check_read_lifetime(claims, issued + READ_LIFETIME_SECONDS - 1)
    with pytest.raises(InvalidReceipt, match="too old") as stale:
        check_read_lifetime(claims, issued + READ_LIFETIME_SECONDS + 1)
    assert stale.value.status_code == 403
    assert receipts  # the proof of content does not expire: Receipts.proves has no clock


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.text(max_size=80) | st.just("subject " + "g" * 32))
def test_hostile_authorization_values_never_pass_as_a_secret(value: str) -> None:
    # Threat: a malformed credential parsed leniently into a usable secret.
    try:
        secret = secret_from_authorization(value)
    except BadRequest as exc:  # the typed 400: never anything else
        status = exc.status_code
        secret = None
    else:
        status = 200
    assert status in (200, 400)
    assert secret is None or (len(secret) == 32 and all(c in "0123456789abcdef" for c in secret))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    secret=st.none() | st.text(max_size=70) | st.integers() | st.lists(st.text(max_size=3)),
    subject=st.none() | st.text(max_size=70) | st.integers(),
)
def test_hostile_subject_fields_are_4xx_and_store_nothing(
    client: TestClient, secret: object, subject: object
) -> None:
    body = consent_body(BUNDLE, "h")
    body["subject_secret"] = secret
    body["subject_id"] = subject
    before = client.app.state.recording.outbox.commits  # type: ignore[attr-defined]
    r = client.post(URL, json=body)
    if r.status_code == 201:  # only a well-formed secret with its own id (or none)
        assert (isinstance(secret, str) and r.json()["subject_id"] == subject) or subject is None
        return
    assert 400 <= r.status_code < 500 and "error" in r.json()
    assert client.app.state.recording.outbox.commits == before  # type: ignore[attr-defined]


def test_the_fast_derivation_is_rfc_2104_hmac() -> None:
    # Threat: a hand-rolled MAC that is not HMAC, and so not the keyed one-way map relied on.
    keys = SubjectKeys(b"r" * 40)
    key = hmac.new(b"r" * 40, b"consent-gateway subject ids v1", hashlib.sha256).digest()
    expected = hmac.new(key, b"demo|" + b"a" * 32, hashlib.sha256).hexdigest()[:32]
    assert keys.subject_id("demo", "a" * 32) == expected
