"""The preferences service's lifetime and I/O: directory, identity key, tokens, API keys."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Sequence
from typing import Any

from gateway.core.errors import BadRequest, ConfigError, Unavailable
from gateway.core.settings import Settings
from gateway.preferences import contactability
from gateway.preferences.auth import ApiKeyAuthenticator
from gateway.preferences.identities import (
    Identity,
    IdentityHasher,
    InvalidIdentity,
    looks_like_contact,
)
from gateway.preferences.tokens import IdentityTokens, TokenClaims
from gateway.preferences.unsubscribe import UnsubscribeLinks
from gateway.sinks import directory_for
from gateway.sinks.directory import ContactRow, Directory, Link, PreferenceState

log = logging.getLogger("gateway.preferences")

# The same subject ids the recording path accepts (gateway/recording/consent.py); repeated
# here because the two services sit on one layer and may not import each other.
SUBJECT_ID = re.compile(r"^[A-Za-z0-9._:@+=~-]{1,128}$")
IDENTITY_SECRET = "identity_key"  # noqa: S105 (the name of a stored secret, not one)


def now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


def check_subject(subject_id: str) -> str:
    """A well-formed subject id that is not a raw identity in disguise."""
    if not SUBJECT_ID.match(subject_id):
        raise BadRequest(
            "invalid_field", "1-128 characters of A-Z a-z 0-9 . _ : @ + = ~ -", field="subject_id"
        )
    if looks_like_contact(subject_id):
        # Links would store it raw, beside the keyed hash meant to keep it out of the store.
        raise BadRequest(
            "subject_id_is_an_identity",
            "a subject id must not be an e-mail address or phone number: link those as "
            "identities of a random subject id",
            field="subject_id",
            status_code=422,
        )
    return subject_id


class PreferenceService:
    """Start it in the app's lifespan; the API handlers call its methods."""

    def __init__(self, settings: Settings, directory: Directory | None = None) -> None:
        # Checked here, before the app starts anything it would have to stop again.
        if settings.identity_key and len(settings.identity_key.encode()) < 32:
            raise ConfigError("GATEWAY_IDENTITY_KEY must be at least 32 bytes, or empty")
        self.settings = settings
        self.directory = directory or directory_for(settings)
        self.auth = ApiKeyAuthenticator(self.directory)
        self._hasher: IdentityHasher | None = None
        self._tokens: IdentityTokens | None = None
        self._links: UnsubscribeLinks | None = None

    async def start(self) -> None:
        await self.directory.open()

    async def stop(self) -> None:
        await self.directory.close()

    async def _keys(self) -> tuple[IdentityHasher, IdentityTokens]:
        """The deployment's identity key: from settings, else shared through the store.

        Read lazily, so that a PostgreSQL store that is down at start-up does not stop the
        gateway from serving banners and recording consents.
        """
        if self._hasher is None or self._tokens is None:
            key = await self._identity_key()
            self._links = UnsubscribeLinks(key)
            self._hasher, self._tokens = IdentityHasher(key), IdentityTokens(key)
        return self._hasher, self._tokens

    async def unsubscribe_links(self) -> UnsubscribeLinks:
        """The signer of one-click unsubscribe links (keyed like identity tokens)."""
        await self._keys()
        assert self._links is not None
        return self._links

    async def _identity_key(self) -> bytes:
        if self.settings.identity_key:
            return self.settings.identity_key.encode("utf-8")
        try:
            # Every node sharing the store must hash identities alike, so the first node to
            # start makes the key and the others read it. A store copy then holds the key
            # as well: set GATEWAY_IDENTITY_KEY to keep them apart.
            text = await self.directory.deployment_secret(
                IDENTITY_SECRET, lambda: secrets.token_hex(32)
            )
        except Exception as exc:
            raise Unavailable("the central store is unreachable", retry_after=5) from exc
        return text.encode("ascii")

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except Exception as exc:  # the store is down or refused: 503, never a 500
            log.warning("directory call failed: %s", exc)
            raise Unavailable("the central store is unreachable", retry_after=5) from exc

    async def hashes(self, site: str, identities: Sequence[Identity]) -> list[str]:
        hasher, _ = await self._keys()
        return [hasher.digest(site, i) for i in identities]

    async def issue_token(
        self, site: str, identities: Sequence[Identity], subject_id: str | None, ttl: int
    ) -> tuple[str, int]:
        """A signed identity token and its expiry (Unix seconds)."""
        _, tokens = await self._keys()
        pairs = [
            (i.type, h)
            for i, h in zip(identities, await self.hashes(site, identities), strict=True)
        ]
        now = int(time.time())
        token = tokens.issue(site, pairs, now=now, ttl=ttl, subject_id=subject_id)
        return token, now + ttl

    async def redeem_token(self, site: str, token: str, subject_id: str) -> TokenClaims:
        """Verify a token once and link the subject to its identities."""
        _, tokens = await self._keys()
        now = int(time.time())
        claims = tokens.verify(token, site=site, now=now, subject_id=subject_id)
        # Once, on any node sharing the store: a token copied from a browser's history or
        # logs cannot link a second subject to the customer. The nonce and the links are
        # stored together, so a failure leaves the token usable again.
        links = [Link(site, subject_id, t, h, now_text(), "token") for t, h in claims.identities]
        fresh = await self._call(
            self.directory.link_once(claims.nonce, claims.expires_at, now, links)
        )
        if not fresh:
            raise BadRequest(
                "token_replayed",
                "this identity token was used already",
                field="token",
                status_code=403,
            )
        return claims

    async def link(self, site: str, subject_id: str, identity: Identity) -> None:
        (digest,) = await self.hashes(site, [identity])
        link = Link(site, subject_id, identity.type, digest, now_text(), "api")
        await self._call(self.directory.link([link]))

    async def subjects_of_hash(self, site: str, digest: str) -> list[str]:
        """Subjects linked to an identity known by its keyed hash, most recently linked first."""
        result: list[str] = await self._call(self.directory.subjects_for(site, digest))
        return result

    async def link_hash(
        self, site: str, subject_id: str, identity_type: str, digest: str, source: str
    ) -> None:
        """Link a subject to an identity known by its keyed hash."""
        link = Link(site, subject_id, identity_type, digest, now_text(), source)
        await self._call(self.directory.link([link]))

    async def subjects_for(self, site: str, identity: Identity) -> list[str]:
        (digest,) = await self.hashes(site, [identity])
        result: list[str] = await self._call(self.directory.subjects_for(site, digest))
        return result

    async def subjects_of_token(self, site: str, claims: TokenClaims) -> list[str]:
        """Every subject linked to any of a token's identities, most recently linked first."""
        found: dict[str, None] = {}
        for _, digest in claims.identities:
            subjects: list[str] = await self._call(self.directory.subjects_for(site, digest))
            found.update(dict.fromkeys(subjects))
        return list(found)

    async def _with_stamps(self, site: str, by_hash: dict[str, list[ContactRow]]) -> None:
        """Add the leaf stamps to the rows of identities with several states (devices): the
        decision takes each leaf from the one that set it last. Rare, so read apart from the
        batch's query, which stays as cheap as it was."""
        several = [
            rows for rows in by_hash.values() if sum(r.preferences is not None for r in rows) > 1
        ]
        if not several:
            return
        keys = {(r.subject_id, r.product_line or "") for rows in several for r in rows}
        stamps: dict[tuple[str, str], dict[str, str]] = await self._call(
            self.directory.stamps_of(site, sorted(keys))
        )
        for rows in several:
            rows[:] = [
                r._replace(stamps=stamps.get((r.subject_id, r.product_line or ""))) for r in rows
            ]

    async def state_of(self, site: str, subject_id: str) -> dict[str, Any]:
        """Preferences per product line ("" = site-wide) and the linked identities' types."""
        states: list[PreferenceState] = await self._call(
            self.directory.preferences_of(site, subject_id)
        )
        types: list[str] = await self._call(self.directory.identity_types(site, subject_id))
        return {
            "preferences": {s.product_line: dict(s.preferences) for s in states},
            "identities": types,
            "updated_at": max((s.updated_at for s in states), default=None),
        }

    async def contactability(
        self,
        site: str,
        q: contactability.Question,
        identities: Sequence[Identity | InvalidIdentity],
    ) -> list[contactability.Answer]:
        """One answer per identity, in order; a malformed identity gets its own no."""
        hasher, _ = await self._keys()
        digests = [hasher.digest(site, i) if isinstance(i, Identity) else None for i in identities]
        asked = [d for d in digests if d is not None]
        rows = await self._call(self.directory.contact_rows(site, asked, q.product_line))
        by_hash: dict[str, list[ContactRow]] = {}
        for row in rows:
            by_hash.setdefault(row.identity_hash, []).append(row)
        await self._with_stamps(site, by_hash)
        return [
            contactability.decide(q, by_hash.get(d, ()))
            if d is not None
            else contactability.Answer(False, "invalid_identity", detail=_detail(i))
            for i, d in zip(identities, digests, strict=True)
        ]


def _detail(identity: Identity | InvalidIdentity) -> str | None:
    return identity.detail if isinstance(identity, InvalidIdentity) else None
