"""Idempotency keys over HTTP: a key replays only its own subject's identical request.

The threats (security review §4d): another subject's key returned that subject's receipt,
which reads their history, and the second subject's choice got a 201 but was never stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gateway.core.settings import Settings
from gateway.recording.receipts import Receipts
from gateway.sites.catalog import load_site
from tests.helpers import shipped_rules
from tests.pg import ROOT, consent_body, drained, recording_app

BUNDLE = load_site(ROOT / "banners" / "demo", ROOT / "locales", shipped_rules())
URL = "/v1/sites/demo/consents"


def make_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", durability="process", node_id="node-a")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(recording_app(make_settings(tmp_path))) as c:
        yield c


def history(client: TestClient, subject: str, receipt: str) -> list[dict[str, object]]:
    drained(client)
    answer = client.get(
        f"/v1/sites/demo/subjects/{subject}/consents",
        headers={"Authorization": f"Bearer {receipt}"},
    )
    assert answer.status_code == 200
    found: list[dict[str, object]] = answer.json()["history"]
    return found


def test_another_subjects_idempotency_key_never_returns_that_subjects_receipt(
    client: TestClient, tmp_path: Path
) -> None:
    alice = client.post(URL, json=consent_body(BUNDLE, "alice", idempotency_key="order-12345"))
    mallory = client.post(
        URL, json=consent_body(BUNDLE, "mallory", "reject_all", idempotency_key="order-12345")
    )
    assert (alice.status_code, mallory.status_code) == (201, 201)
    assert "idempotent-replayed" not in mallory.headers
    receipts = Receipts.from_settings(make_settings(tmp_path))
    assert receipts.verify(mallory.json()["receipt"]).subject_id == mallory.json()["subject_id"]
    assert mallory.json()["subject_id"] != alice.json()["subject_id"]
    assert mallory.json()["record_id"] != alice.json()["record_id"]
    # Both choices are stored, each under its own subject.
    assert [
        h["action"]
        for h in history(client, mallory.json()["subject_id"], mallory.json()["receipt"])
    ] == ["reject_all"]
    assert [
        h["action"] for h in history(client, alice.json()["subject_id"], alice.json()["receipt"])
    ] == ["accept_all"]


def test_reused_idempotency_key_with_a_different_body_is_409_never_a_silent_201(
    client: TestClient,
) -> None:
    first = client.post(URL, json=consent_body(BUNDLE, "sub-9", idempotency_key="click-1"))
    changed = client.post(
        URL, json=consent_body(BUNDLE, "sub-9", "reject_all", idempotency_key="click-1")
    )
    assert changed.status_code == 409
    assert changed.headers["content-type"] == "application/json"
    assert changed.json()["error"] == "idempotency_key_reused"
    assert changed.json()["field"] == "idempotency_key"
    # The identical retry still replays the original receipt, and one record is stored.
    again = client.post(URL, json=consent_body(BUNDLE, "sub-9", idempotency_key="click-1"))
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(history(client, first.json()["subject_id"], first.json()["receipt"])) == 1


def test_a_retry_after_a_restart_gets_the_same_record_and_receipt(tmp_path: Path) -> None:
    """The outbox keeps a key's record id, time and content hash, not its receipt: a retry
    the snippet sends after the gateway restarted (a deploy between its tries) is answered
    with the receipt signed again, which must be the very token the first answer carried,
    and must still read the subject's history. Threat: a replay whose receipt no longer
    verifies, or a second record."""
    body = consent_body(BUNDLE, "sub-restart", idempotency_key="click-after-deploy")
    with TestClient(recording_app(make_settings(tmp_path))) as before:
        first = before.post(URL, json=body)
        assert first.status_code == 201
    with TestClient(recording_app(make_settings(tmp_path))) as after:
        again = after.post(URL, json=body)
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        receipt = again.json()["receipt"]
        assert len(history(after, first.json()["subject_id"], receipt)) == 1
