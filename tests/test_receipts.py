"""Receipts prove a record's content and name its subject; any tampering is refused."""

from __future__ import annotations

import base64
import dataclasses
import hmac
import stat
from pathlib import Path
from types import MappingProxyType

import orjson
import pytest

from gateway.core.errors import ConfigError
from gateway.core.model import ConsentRecord
from gateway.core.settings import Settings
from gateway.recording.receipts import (
    KEY_FILE,
    InvalidReceipt,
    Receipts,
    canonical_json,
    content_hash,
    load_key,
)
from tests.pg import make_record

# A fixed id and time, so the token's claims are predictable.
RECORD = make_record(
    record_id="018f2b6e-0000-7000-8000-000000000001",
    recorded_at="2026-01-01T00:00:00.000001Z",
    analytics=False,
)
SIGNER = Receipts(b"k" * 32)


def test_round_trip_carries_the_identity_and_the_content_hash() -> None:
    claims = SIGNER.verify(SIGNER.issue(RECORD))
    assert (claims.site, claims.subject_id, claims.record_id) == (
        "demo",
        "subject-1",
        RECORD.record_id,
    )
    assert claims.content_hash == content_hash(RECORD)
    assert SIGNER.proves(SIGNER.issue(RECORD), RECORD)


@pytest.mark.parametrize(
    "record",
    [
        RECORD,
        dataclasses.replace(RECORD, choices=MappingProxyType({"b": True, "a": False})),
        dataclasses.replace(RECORD, signals={"gcm": {"z": 1, "a": 2}}, language="zh-Hant"),
        dataclasses.replace(RECORD, withdraws=RECORD.record_id, idempotency_key="k\u00e9"),
    ],
)
def test_canonical_json_is_the_sorted_record_whatever_its_mappings(
    record: ConsentRecord,
) -> None:
    expected = orjson.dumps(record.as_json(), option=orjson.OPT_SORT_KEYS)
    assert canonical_json(record) == expected
    assert list(orjson.loads(canonical_json(record))) == sorted(record.as_json())


def test_a_changed_record_is_not_proven() -> None:
    token = SIGNER.issue(RECORD)
    altered = dataclasses.replace(RECORD, choices={"necessary": True, "analytics": True})
    assert not SIGNER.proves(token, altered)


def _forge_payload(token: str, **changes: str) -> str:
    _, payload, signature = token.split(".")
    data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    forged = base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()
    return f"v1.{forged}.{signature}"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: _forge_payload(t, u="someone-else"),
        lambda t: _forge_payload(t, s="other-site"),
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: t.replace("v1.", "v2.", 1),
        lambda t: t.rsplit(".", 1)[0],
        lambda t: t + "é",
        lambda t: "",
        lambda t: "v1..",
        lambda t: "v1." + "A" * 2000 + ".x",
        lambda t: Receipts(b"z" * 32).issue(RECORD),
    ],
)
def test_tampered_tokens_are_refused(tamper: object) -> None:
    token = tamper(SIGNER.issue(RECORD))  # type: ignore[operator]
    with pytest.raises(InvalidReceipt) as info:
        SIGNER.verify(token)
    assert info.value.status_code == 403


def test_signed_garbage_payload_is_refused_cleanly() -> None:
    payload = base64.urlsafe_b64encode(b"[1,2]").rstrip(b"=").decode()
    token = f"v1.{payload}.{SIGNER._sign(payload)}"
    with pytest.raises(InvalidReceipt):
        SIGNER.verify(token)


def test_generated_key_is_private_and_stable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = load_key(settings)
    path = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(settings) == first
    assert len(first) >= 32
    token = Receipts(first).issue(RECORD)
    assert Receipts.from_settings(settings).verify(token).record_id == RECORD.record_id


def test_configured_key_wins_and_short_key_file_is_refused(tmp_path: Path) -> None:
    assert load_key(Settings(data_dir=tmp_path, receipt_key="secret")) == b"secret"
    (tmp_path / KEY_FILE).write_bytes(b"short")
    with pytest.raises(ConfigError):
        load_key(Settings(data_dir=tmp_path))


@pytest.mark.parametrize("key", [b"k" * 32, b"x" * 64, b"y" * 100, b"short"])
def test_signature_is_standard_hmac_sha256(key: bytes) -> None:
    token = Receipts(key).issue(RECORD)
    _, payload, signature = token.split(".")
    expected = hmac.new(key, payload.encode(), "sha256").digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
