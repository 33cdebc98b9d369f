"""One-click unsubscribe links (RFC 8058): signed, long-lived, no login. Pure.

The site's e-mail tool asks for a link per recipient and topic
(``POST /v1/sites/{site}/unsubscribe-links``) and puts it in the message's
``List-Unsubscribe`` header with ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. The
mailbox provider later POSTs ``List-Unsubscribe=One-Click`` to it: the e-mail channel of that
topic is turned off for the identity, nothing else. A link must keep working as long as
messages are read, so it lives for months; it names the identity by its keyed hash (never the
address: links end up in logs and forwarded mails) and is signed with a key derived from the
deployment's identity key. A replayed POST records nothing new (an idempotency key per link).

A token is ``u1.<payload>.<signature>`` (unpadded base64url); the payload is ``{"s": site,
"t": identity type, "h": keyed hash, "p": topic, "l": product line, "exp": Unix seconds}``.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from dataclasses import dataclass

import orjson

from gateway.core.errors import BadRequest
from gateway.preferences.tokens import _b64, _unb64

PREFIX = "u1."
MAX_TOKEN = 1024
DEFAULT_TTL_DAYS = 90
MAX_TTL_DAYS = 400
ONE_CLICK = "List-Unsubscribe=One-Click"


class InvalidLink(BadRequest):
    """A link that is malformed, forged, expired or of another site."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid_unsubscribe_link", detail, status_code=403)


@dataclass(frozen=True)
class LinkClaims:
    site: str
    identity_type: str
    identity_hash: str
    topic: str
    product_line: str
    expires_at: int

    @property
    def idempotency_key(self) -> str:
        """One per link: a mailbox provider retrying its POST records nothing new."""
        data = f"{self.site}|{self.identity_hash}|{self.topic}|{self.product_line}"
        return "unsubscribe:" + hashlib.sha256(data.encode()).hexdigest()[:32]


class UnsubscribeLinks:
    """Issues and verifies link tokens with a key derived from the deployment's key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the identity key must be at least 32 bytes")
        self._key = hmac.new(key, b"consent-gateway unsubscribe link v1", hashlib.sha256).digest()

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(
        self,
        site: str,
        identity: tuple[str, str],
        topic: str,
        product_line: str,
        *,
        now: int,
        ttl_days: int = DEFAULT_TTL_DAYS,
    ) -> tuple[str, int]:
        """A token and its expiry (Unix seconds)."""
        if not 1 <= ttl_days <= MAX_TTL_DAYS:
            raise ValueError(f"ttl_days must be 1-{MAX_TTL_DAYS}")
        expires = now + ttl_days * 86400
        claims = {
            "s": site,
            "t": identity[0],
            "h": identity[1],
            "p": topic,
            "l": product_line,
            "exp": expires,
        }
        payload = _b64(orjson.dumps(claims))
        return f"{PREFIX}{payload}.{self._sign(payload)}", expires

    def verify(self, token: str, *, site: str, now: int) -> LinkClaims:
        """The claims of a genuine, current link of this site; ``InvalidLink`` otherwise."""
        if len(token) > MAX_TOKEN or not token.isascii() or not token.startswith(PREFIX):
            raise InvalidLink("not an unsubscribe link")
        payload, _, signature = token[len(PREFIX) :].partition(".")
        if not payload or not signature:
            raise InvalidLink("not an unsubscribe link")
        if not hmac.compare_digest(self._sign(payload), signature):
            raise InvalidLink("the link's signature does not match")
        try:
            data = orjson.loads(_unb64(payload))
            claims = LinkClaims(
                site=str(data["s"]),
                identity_type=str(data["t"]),
                identity_hash=str(data["h"]),
                topic=str(data["p"]),
                product_line=str(data["l"]),
                expires_at=int(data["exp"]),
            )
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise InvalidLink("the link's payload is malformed") from exc
        if claims.site != site:
            raise InvalidLink("the link belongs to another site")
        if now >= claims.expires_at:
            raise InvalidLink("the link has expired: use the preference center instead")
        return claims
