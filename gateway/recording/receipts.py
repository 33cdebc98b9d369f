"""Receipts: HMAC-SHA256 tokens that prove a record's content and name its subject.

A token is ``v1.<payload>.<signature>`` with both parts unpadded base64url; the payload is
the JSON ``{"s": site, "u": subject_id, "r": record_id, "t": recorded_at, "h": sha256 of
the record's canonical JSON}``. Anyone holding the key can check a stored record against
the hash; the subject uses the token to read their own history.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.core import signed
from gateway.core.errors import BadRequest, ConfigError
from gateway.core.record_codec import Record
from gateway.core.settings import Settings

KEY_FILE = "receipt.key"
_PREFIX = "v1."
MAX_TOKEN = 1024


@dataclass(frozen=True)
class ReceiptClaims:
    """What a valid receipt vouches for."""

    site: str
    subject_id: str
    record_id: str
    recorded_at: str
    content_hash: str


class InvalidReceipt(BadRequest):
    """A receipt that is malformed, forged or tampered with."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid_receipt", detail, status_code=403)


_FORM = signed.Form(
    _PREFIX,
    MAX_TOKEN,
    InvalidReceipt,
    "not a receipt",
    "the receipt signature does not match",
    "the receipt payload is malformed",
)


def canonical_json(record: Record) -> bytes:
    """The record's canonical bytes: sorted keys, no whitespace, UTF-8."""
    return orjson.dumps(record.plain_json(), option=orjson.OPT_SORT_KEYS)


def content_hash(record: Record) -> str:
    """Hex SHA-256 of the canonical JSON."""
    return hashlib.sha256(canonical_json(record)).hexdigest()


def load_key(settings: Settings) -> bytes:
    """The signing key: from settings, else read or created (mode 0600) in the data dir."""
    if settings.receipt_key:
        return settings.receipt_key.encode("utf-8")
    path = Path(settings.data_dir) / KEY_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes().strip()
        else:
            key = secrets.token_hex(32).encode("ascii")
            with os.fdopen(fd, "wb") as handle:
                handle.write(key + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
    except OSError as exc:
        raise ConfigError(
            f"cannot read or create the receipt key: {exc}",
            hint="set GATEWAY_RECEIPT_KEY or make the data dir writable",
            where=str(path),
        ) from exc
    if len(key) < 32:
        raise ConfigError(
            "the receipt key file is too short",
            hint="delete it to generate a new one",
            where=str(path),
        )
    return key


class Receipts:
    """Issues receipts with one key; verifies them with it or any of ``previous`` (rotation:
    receipts signed before the key changed stay valid)."""

    def __init__(self, key: bytes, previous: tuple[bytes, ...] = ()) -> None:
        if not key:
            raise ConfigError("the receipt key is empty")
        self._key = key
        self._signer = signed.Signer(key)
        self._verifiers = [self._signer, *(signed.Signer(k) for k in previous if k and k != key)]

    @classmethod
    def from_settings(cls, settings: Settings) -> Receipts:
        previous = tuple(k.encode("utf-8") for k in settings.receipt_keys_previous)
        return cls(load_key(settings), previous)

    def _sign(self, payload: str) -> str:
        return self._signer.sign(payload)

    def issue(self, record: Record, digest: bytes | None = None) -> str:
        """A token for this exact record (``digest``: the SHA-256 of its canonical JSON, if
        made already)."""
        if digest is None:
            digest = hashlib.sha256(canonical_json(record)).digest()
        return self.token(
            record.site, record.subject_id, record.record_id, record.recorded_at, digest.hex()
        )

    def token(
        self, site: str, subject_id: str, record_id: str, recorded_at: str, content_hash: str
    ) -> str:
        """The token of a record known by its identity and content hash (so a retry another
        worker answers gets the same token, or one signed with a newer key)."""
        claims = {"s": site, "u": subject_id, "r": record_id, "t": recorded_at, "h": content_hash}
        return self._signer.seal(_PREFIX, claims)

    def verify(self, token: str) -> ReceiptClaims:
        """The claims of a genuine token; ``InvalidReceipt`` for anything else."""
        return signed.opened(
            token,
            _FORM,
            self._verifiers,
            lambda data: ReceiptClaims(
                site=str(data["s"]),
                subject_id=str(data["u"]),
                record_id=str(data["r"]),
                recorded_at=str(data["t"]),
                content_hash=str(data["h"]),
            ),
        )

    def proves(self, token: str, record: Record) -> bool:
        """Whether the token is genuine and matches this record's content exactly."""
        claims = self.verify(token)
        return claims.record_id == record.record_id and hmac.compare_digest(
            claims.content_hash, content_hash(record)
        )


# How long a receipt opens its subject's history. A receipt proves its record's content for
# ever (``proves``), but as a read credential it is a bearer token that may sit in a browser,
# a mail or a log; the subject's secret (gateway/recording/subjects.py) reads at any time.
READ_LIFETIME_SECONDS = 24 * 3600


def check_read_lifetime(
    claims: ReceiptClaims, now: float, lifetime: float = READ_LIFETIME_SECONDS
) -> None:
    """Raise ``InvalidReceipt`` (403) when a receipt is too old to read history with."""
    try:
        issued = dt.datetime.strptime(claims.recorded_at, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError as exc:
        raise InvalidReceipt("the receipt's time is malformed") from exc
    age = now - issued.replace(tzinfo=dt.UTC).timestamp()
    if age > lifetime:
        raise InvalidReceipt(
            "the receipt is too old to read history with: present the subject secret "
            "(Authorization: Subject <secret>)"
        )
