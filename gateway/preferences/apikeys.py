"""Per-site API keys: their format, scopes and hashing. Pure: no I/O.

A key is ``cgk_<key id>_<secret>``: the key id (12 hex characters) finds the stored row, the
secret (32 random bytes, base64url) proves possession. The store keeps only the SHA-256 of
the secret: a copy of the store lets nobody call the API, and 256 random bits need no slow
hash (there is no dictionary to guess from).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "cgk_"
_KEY = re.compile(r"^cgk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
KEY_ID = re.compile(r"^[0-9a-f]{12}$")
NAME = re.compile(r"^[\x20-\x7e]{1,80}$")

# What a key may do. A key made without --scope gets all of them.
SCOPES: tuple[str, ...] = (
    "subjects:read",  # read a subject's state, find subjects by identity
    "identities:write",  # link identities, issue identity tokens
    "contactability",  # the batch contactability check
    "records:write",  # record consents and preferences on a subject's behalf
)


@dataclass(frozen=True)
class NewKey:
    """A key as made: ``secret_hash`` is stored, ``key`` is shown once and forgotten."""

    key_id: str
    key: str
    secret_hash: str


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def generate() -> NewKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, f"{PREFIX}{key_id}_{secret}", secret_hash(secret))


def parse(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY.match(presented)
    return (match.group(1), match.group(2)) if match else None


def matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of the presented secret's hash with the stored one."""
    return hmac.compare_digest(secret_hash(secret), stored_hash)


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, validated and deduplicated in the order of SCOPES; all when none given."""
    given = set(scopes)
    unknown = sorted(given - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}; scopes: {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in given) if given else SCOPES
