"""Subjects are capabilities: a subject id is derived from a secret only its holder has.

Security review §4d: anyone who knew a subject id could write for it, get a receipt and read
its history. Now the browser (or app) makes a 128-bit random *subject secret* and keeps it;
the gateway derives the subject id as ``HMAC(subject key, site | secret)`` and stores no
secret at all. Every write, and every read not made with a fresh receipt, presents the
secret: a subject id alone, copied from a log, a webhook or another browser, opens nothing,
and no one can pick an id (an e-mail address, say) since ids are HMAC outputs.

The subject key is derived from the receipt key (the one secret every node of a deployment
already shares), with its own label so the two uses never mix. Rotating the receipt key
therefore re-derives every subject id: old subjects then start afresh.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from gateway.core.errors import BadRequest

SECRET_RE = re.compile(r"[0-9a-f]{32}")  # 128 random bits, the snippet's and apps' format
SUBJECT_RE = re.compile(r"[0-9a-f]{32}")  # 128 bits of HMAC output
SCHEME = "subject"  # Authorization: Subject <secret>
_LABEL = b"consent-gateway subject ids v1"


class SubjectForbidden(BadRequest):
    """A request for a subject without the proof that it holds the subject's secret."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail, status_code=403)


def check_secret(value: object, field: str = "subject_secret") -> str:
    """A well-formed subject secret; 400 naming ``field`` for anything else."""
    if not isinstance(value, str) or not SECRET_RE.fullmatch(value):
        raise BadRequest(
            "invalid_field", "the subject secret is 32 lower-case hex digits", field=field
        )
    return value


def is_subject_id(value: str) -> bool:
    """Whether ``value`` has the shape of an id the gateway derives."""
    return SUBJECT_RE.fullmatch(value) is not None


class SubjectKeys:
    """Derives subject ids from secrets, and checks a secret against an id."""

    def __init__(self, receipt_key: bytes) -> None:
        key = hmac.new(receipt_key, _LABEL, hashlib.sha256).digest()
        # HMAC (RFC 2104) with the padded key hashed once, as receipts do: every record
        # derives an id, and copying two prepared hashes is ~4x cheaper than hmac.new.
        padded = key.ljust(hashlib.sha256().block_size, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def subject_id(self, site: str, secret: str) -> str:
        """The subject id of ``secret`` on ``site`` (per site: two sites cannot link them)."""
        inner = self._inner.copy()
        inner.update(f"{site}|{secret}".encode("ascii"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()[:32]

    def for_identity(self, site: str, identity_hash: str) -> str:
        """The subject the gateway keeps for an identity no subject is linked to yet (an
        unsubscribe, a sign-up at a store counter): derived like any id, from an input no
        secret can give (secrets are hex only, this has a colon), so no one holds its secret."""
        inner = self._inner.copy()
        inner.update(f"{site}|identity:{identity_hash}".encode("ascii"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()[:32]

    def require(self, site: str, subject_id: str, secret: str) -> None:
        """Raise ``SubjectForbidden`` unless ``secret`` is the secret of ``subject_id``."""
        if not hmac.compare_digest(self.subject_id(site, secret), subject_id):
            raise SubjectForbidden(
                "subject_secret_mismatch", "the subject secret does not belong to this subject"
            )


def secret_from_authorization(header: str | None) -> str | None:
    """The secret of ``Authorization: Subject <secret>``, None for another scheme or none."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != SCHEME:
        return None
    return check_secret(value.strip(), field="authorization")


def gateway_subject_id(value: object) -> str:
    """A subject id named by an API caller: one the gateway derived (never an identity)."""
    if value is None:
        raise BadRequest(
            "missing_field", "subject_id (or identity) is required", field="subject_id"
        )
    if not isinstance(value, str) or not is_subject_id(value):
        raise BadRequest(
            "invalid_field",
            "a subject id is the 32 lower-case hex digits the gateway derived",
            field="subject_id",
        )
    return value
