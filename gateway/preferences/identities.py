"""Identities a subject can be linked to: validation, normalization and keyed hashing.

Pure: no I/O. Identities are looked up by an HMAC of their normalized value under a key of
the deployment, never stored raw: a copy of the store does not reveal who the customers are,
and without the key nobody can test a guessed e-mail address against it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

import phonenumbers

from gateway.core.errors import BadRequest
from gateway.core.preference_model import PreferenceModel

MAX_VALUE = 256
# RFC 5321 limits; stricter than RFC 5322 on purpose (no quoted local parts, no comments).
_EMAIL = re.compile(
    r"^[^@\s\x00-\x1f\x7f\"(),:;<>\[\]\\]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$"
)
# Customer ids and site-defined types: printable, no spaces inside, as a CRM key would be.
_OPAQUE = re.compile(r"^[\x21-\x7e]{1,128}$")
# WeChat openids and unionids are 28 characters of base64url-like text; allow some slack.
_WECHAT = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def looks_like_contact(text: str) -> bool:
    """Whether a string (a subject id, say) is an e-mail address or a phone number."""
    return bool(_EMAIL.match(text) or _PHONE_LIKE.match(text))


# Seven or more digits with phone punctuation: too like a number to be a random id.
_PHONE_LIKE = re.compile(r"^\+?[0-9 ().-]{7,20}$")


class InvalidIdentity(BadRequest):
    """An identity whose type is unknown to the site or whose value is malformed."""

    def __init__(self, detail: str, field: str = "identity") -> None:
        super().__init__("invalid_identity", detail, field=field, status_code=422)


@dataclass(frozen=True)
class Identity:
    """A normalized identity: what gets hashed, and what a token or link refers to."""

    type: str
    value: str

    @property
    def label(self) -> str:
        return f"{self.type}:{self.value}"


def _phone(value: str) -> str:
    """E.164 (``+4930123456``); a number must carry its country code (``+``, or ``00``)."""
    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.startswith("+"):
        raise InvalidIdentity("a phone number needs its country code, e.g. +49 30 123456")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentity(f"not a phone number: {exc}") from exc
    if not phonenumbers.is_possible_number(number):
        raise InvalidIdentity("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize(model: PreferenceModel, type_: str, value: str, field: str = "identity") -> Identity:
    """The canonical form of an identity, so that two spellings of one find the same subject."""
    if type_ not in model.all_identity_types:
        raise InvalidIdentity(
            f"unknown identity type {type_[:40]!r}; this site knows "
            f"{', '.join(model.all_identity_types)}",
            field=f"{field}.type",
        )
    try:
        return _normalized(type_, value)
    except InvalidIdentity as exc:
        exc.field = f"{field}.value"
        raise


def _normalized(type_: str, value: str) -> Identity:
    if not value or len(value) > MAX_VALUE:
        raise InvalidIdentity(f"the value must be 1-{MAX_VALUE} characters")
    if type_ == "email":
        # Domains are case-insensitive; local parts are too at every mail provider that
        # matters, and a CRM that stored "Ann@X.com" must find the subject linked as "ann@x.com".
        text = value.strip().lower()
        if not _EMAIL.match(text):
            raise InvalidIdentity("not an e-mail address")
        return Identity(type_, text)
    if type_ == "phone":
        return Identity(type_, _phone(value))
    if type_ in ("wechat_openid", "wechat_unionid"):
        text = value.strip()
        if not _WECHAT.match(text):
            raise InvalidIdentity(f"not a WeChat {type_[7:]}")
        return Identity(type_, text)
    text = value.strip()  # customer ids and site types are case-sensitive keys
    if not _OPAQUE.match(text):
        raise InvalidIdentity("1-128 printable characters without spaces")
    return Identity(type_, text)


def from_json(model: PreferenceModel, data: Any, field: str = "identity") -> Identity:
    """An identity from a JSON ``{"type", "value"}`` object."""
    if not isinstance(data, dict):  # decoded JSON; an ABC check costs more on batches
        raise InvalidIdentity('expected {"type": …, "value": …}', field)
    type_, value = data.get("type"), data.get("value")
    if not isinstance(type_, str) or not isinstance(value, str):
        raise InvalidIdentity('"type" and "value" must be strings', field)
    return normalize(model, type_, value, field)


def from_query(model: PreferenceModel, text: str) -> Identity:
    """An identity from ``TYPE:VALUE`` (the part after the first colon is the value)."""
    type_, sep, value = text.partition(":")
    if not sep:
        raise InvalidIdentity("expected TYPE:VALUE, e.g. email:ann@example.com", "identity")
    return normalize(model, type_, value)


class IdentityHasher:
    """Keyed hashes of identities, per site: the same e-mail in two sites is not linkable."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the identity key must be at least 32 bytes")
        # A key of its own for hashing, derived so that the token key is never reused here.
        derived = hmac.new(key, b"consent-gateway identity hash v1", hashlib.sha256).digest()
        # HMAC (RFC 2104) with the padded key hashed in once: each digest then costs two hash
        # copies (a batch check hashes a thousand identities), as in recording/receipts.py.
        padded = derived.ljust(hashlib.sha256().block_size, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def digest(self, site: str, identity: Identity) -> str:
        """Hex HMAC-SHA256 of site, type and normalized value (NUL-separated, unambiguous)."""
        inner = self._inner.copy()
        inner.update(f"{site}\0{identity.type}\0{identity.value}".encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()
