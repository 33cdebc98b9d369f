"""Signed tokens: ``<prefix><payload>.<signature>``, both unpadded base64url, the payload a
JSON object of claims and the signature its HMAC-SHA256. Pure.

The one form of receipts (gateway/recording/receipts.py), identity tokens
(gateway/preferences/tokens.py) and unsubscribe links (gateway/preferences/unsubscribe.py);
each keeps its own prefix, key, claims and errors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

T = TypeVar("T")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """HMAC-SHA256 (RFC 2104) with the padded key hashed once: each token then costs two
    hash copies instead of a new HMAC object (the request path signs every record)."""

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    @classmethod
    def derived(cls, key: bytes, label: bytes) -> Signer:
        """A signer whose key is derived from the deployment's ``key`` (>= 32 bytes) for one
        use, named by ``label``."""
        if len(key) < 32:
            raise ValueError("the identity key must be at least 32 bytes")
        return cls(hmac.new(key, label, hashlib.sha256).digest())

    def sign(self, payload: str) -> str:
        # Not hmac.digest(): its one-shot C call releases the GIL, and winning it back from
        # another thread can cost milliseconds on the request path (measured).
        inner = self._inner.copy()
        inner.update(payload.encode("ascii"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return b64(outer.digest())

    def seal(self, prefix: str, claims: Mapping[str, Any]) -> str:
        """The token carrying ``claims``."""
        payload = b64(orjson.dumps(claims))
        return f"{prefix}{payload}.{self.sign(payload)}"


def split(token: str, prefix: str, max_length: int) -> tuple[str, str] | None:
    """(payload, signature) of a token of this form, None for anything else (too long, not
    ASCII, another prefix, a part missing)."""
    if len(token) > max_length or not token.isascii() or not token.startswith(prefix):
        return None
    payload, _, signature = token[len(prefix) :].partition(".")
    if not payload or not signature:
        return None
    return payload, signature


def genuine(signers: Sequence[Signer], payload: str, signature: str) -> bool:
    """Whether one of ``signers`` made ``signature`` (compared in constant time)."""
    return any(hmac.compare_digest(s.sign(payload), signature) for s in signers)


@dataclass(frozen=True)
class Form:
    """One kind of token: its prefix and longest length, and how it refuses one (the error
    and its three reasons)."""

    prefix: str
    max_length: int
    refuse: Callable[[str], Exception]
    not_one: str  # not of this form at all
    forged: str  # no signer made the signature
    malformed: str  # genuine, but the payload does not hold the claims


def opened(token: str, form: Form, signers: Sequence[Signer], claims: Callable[[Any], T]) -> T:
    """``claims`` of the payload of a genuine token (``claims`` may raise ValueError, KeyError
    or TypeError for a payload it cannot read); ``form.refuse`` for anything else."""
    parts = split(token, form.prefix, form.max_length)
    if parts is None:
        raise form.refuse(form.not_one)
    payload, signature = parts
    if not genuine(signers, payload, signature):
        raise form.refuse(form.forged)
    try:
        return claims(orjson.loads(unb64(payload)))  # binascii.Error is a ValueError
    except (ValueError, KeyError, TypeError) as exc:
        raise form.refuse(form.malformed) from exc
