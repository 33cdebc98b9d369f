"""Identity tokens: short-lived, HMAC-signed proof that the site's backend vouches for an identity.

Pure: no I/O, the clock is a parameter. The site's backend asks for a token with its API key
(``POST /v1/sites/{site}/identity-tokens``) and hands it to the snippet, which presents it to
link the browser's subject. A browser can therefore claim only an identity it was given.

A token is ``it1.<payload>.<signature>`` (unpadded base64url). The payload carries the keyed
hashes of the identities, never their values: it passes through the browser and may end up
in its history or logs. Claims: ``s`` site, ``i`` [[type, hash], …], ``u`` the subject it is
bound to (or null), ``iat``/``exp`` (Unix seconds), ``n`` a random nonce that the central
store accepts once (``Directory.link_once``).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core import signed
from gateway.core.errors import BadRequest

PREFIX = "it1."
MAX_TOKEN = 4096
MAX_IDENTITIES = 10
DEFAULT_TTL = 300
MAX_TTL = 3600
CLOCK_SKEW = 60  # seconds a token's issue time may lie in the future (nodes' clocks differ)


class InvalidToken(BadRequest):
    """A token that is malformed, forged, expired, replayed or for another site or subject."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid_identity_token", detail, field="token", status_code=403)


_FORM = signed.Form(
    PREFIX,
    MAX_TOKEN,
    InvalidToken,
    "not an identity token",
    "the token's signature does not match",
    "the token's payload is malformed",
)


@dataclass(frozen=True)
class TokenClaims:
    site: str
    identities: tuple[tuple[str, str], ...]  # (type, keyed hash)
    subject_id: str | None
    issued_at: int
    expires_at: int
    nonce: str


class IdentityTokens:
    """Issues and verifies identity tokens with a key derived from the deployment's key."""

    def __init__(self, key: bytes) -> None:
        self._signer = signed.Signer.derived(key, b"consent-gateway identity token v1")

    def issue(
        self,
        site: str,
        identities: Sequence[tuple[str, str]],
        *,
        now: int,
        ttl: int = DEFAULT_TTL,
        subject_id: str | None = None,
    ) -> str:
        """A token for these (type, keyed hash) pairs, valid ``ttl`` seconds from ``now``."""
        if not 1 <= len(identities) <= MAX_IDENTITIES:
            raise ValueError(f"a token names 1-{MAX_IDENTITIES} identities")
        if not 1 <= ttl <= MAX_TTL:
            raise ValueError(f"ttl must be 1-{MAX_TTL} seconds")
        claims = {
            "s": site,
            "i": [list(pair) for pair in identities],
            "u": subject_id,
            "iat": now,
            "exp": now + ttl,
            "n": secrets.token_urlsafe(16),
        }
        return self._signer.seal(PREFIX, claims)

    def verify(
        self, token: str, *, site: str, now: int, subject_id: str | None = None
    ) -> TokenClaims:
        """The claims of a genuine, current token of this site (and subject, when bound)."""
        claims = signed.opened(
            token,
            _FORM,
            [self._signer],
            lambda data: TokenClaims(
                site=str(data["s"]),
                identities=tuple((str(t), str(h)) for t, h in data["i"]),
                subject_id=None if data["u"] is None else str(data["u"]),
                issued_at=int(data["iat"]),
                expires_at=int(data["exp"]),
                nonce=str(data["n"]),
            ),
        )
        if claims.site != site:
            raise InvalidToken("the token belongs to another site")
        if now >= claims.expires_at:
            raise InvalidToken("the token has expired; ask the site for a new one")
        if claims.issued_at > now + CLOCK_SKEW:
            raise InvalidToken("the token was issued in the future")
        if claims.subject_id is not None and claims.subject_id != subject_id:
            raise InvalidToken("the token is bound to another subject")
        return claims
