"""API key authentication for server-to-server calls, with a short-lived cache of keys.

Missing, malformed, unknown, wrong or revoked: 401. A key of another site, or one without
the scope a call needs: 403. Only keys found in the store are cached (an outsider's made-up
key ids never are, so they cannot fill the cache), for ``ttl`` seconds: a revocation made on
any node takes effect everywhere within that time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache

from gateway.core.errors import BadRequest, Unavailable
from gateway.preferences import apikeys
from gateway.sinks.directory import Directory, StoredKey

CACHE_TTL = 5.0
CACHE_SIZE = 10_000
_NO_HASH = "0" * 64  # compared against when the key id is unknown: same work


class Unauthorized(BadRequest):
    """No valid API key: 401 with a Bearer challenge."""

    challenge = 'Bearer realm="consent-gateway api"'

    def __init__(self, detail: str) -> None:
        super().__init__("unauthorized", detail, status_code=401)


class Forbidden(BadRequest):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail, status_code=403)


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer …`` header."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("send the site's API key as `Authorization: Bearer <key>`")
    return value.strip()


class ApiKeyAuthenticator:
    """Checks a presented key against the central store; one instance per app."""

    def __init__(
        self,
        directory: Directory,
        *,
        ttl: float = CACHE_TTL,
        size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self._cache: TTLCache[str, StoredKey] = TTLCache(maxsize=size, ttl=ttl, timer=clock)

    async def _stored(self, key_id: str) -> StoredKey | None:
        stored = self._cache.get(key_id)
        if stored is not None:
            return stored
        try:
            stored = await self.directory.get_key(key_id)
        except Exception as exc:  # the store is down: say so, never "wrong key"
            raise Unavailable("the key store is unreachable", retry_after=5) from exc
        if stored is not None:
            self._cache[key_id] = stored
        return stored

    async def authenticate(self, authorization: str | None, site: str, scope: str) -> StoredKey:
        """The key's row when it is genuine, current, of ``site`` and allowed ``scope``."""
        parsed = apikeys.parse(bearer(authorization))
        if parsed is None:
            raise Unauthorized("the API key is malformed")
        key_id, secret = parsed
        stored = await self._stored(key_id)
        # One answer for unknown, wrong and revoked keys: a caller learns nothing about
        # which key ids exist.
        genuine = apikeys.matches(secret, stored.secret_hash if stored else _NO_HASH)
        if stored is None or not genuine:
            raise Unauthorized("the API key is not valid")
        if stored.revoked_at is not None:
            raise Unauthorized("the API key is not valid")
        if stored.site != site:
            raise Forbidden("wrong_site", "this API key belongs to another site")
        if scope not in stored.scopes:
            raise Forbidden("insufficient_scope", f"this API key lacks the scope {scope!r}")
        return stored
