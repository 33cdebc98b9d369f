"""The central store's directory: API keys, identity links, preference state, shared secrets.

Kept apart from the record tables: these rows are state every gateway node sharing the
store reads (a key made on one node works on all), not an append-only history.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

MAX_SUBJECTS_PER_IDENTITY = 100  # devices and apps one customer may have linked


@dataclass(frozen=True)
class StoredKey:
    """An API key's row: the SHA-256 of its secret, never the secret."""

    key_id: str
    site: str
    name: str
    scopes: tuple[str, ...]
    secret_hash: str
    created_at: str
    revoked_at: str | None = None


@dataclass(frozen=True)
class Link:
    """A subject linked to an identity, known by its keyed hash only."""

    site: str
    subject_id: str
    identity_type: str
    identity_hash: str
    linked_at: str
    source: str  # "api" (server to server) or "token" (an identity token)


@dataclass(frozen=True)
class PreferenceState:
    """A subject's latest preferences for one product line ("" when not scoped)."""

    site: str
    subject_id: str
    product_line: str
    preferences: Mapping[str, Any]  # {"channels": {id: bool}, "topics": {id: {...}}}
    record_id: str
    updated_at: str  # RFC 3339 UTC, fixed width: text order is time order
    extra: Mapping[str, Any] = field(default_factory=dict)


class ContactRow(NamedTuple):
    """One subject linked to a looked-up identity, with its state for one product line (the
    state's fields None when it has none). A plain tuple: a batch check reads thousands."""

    identity_hash: str
    subject_id: str
    product_line: str | None
    preferences: Mapping[str, Any] | None
    updated_at: str | None
    record_id: str | None
    # The state's leaf stamps (preference_state.py), added only when the identity has several
    # rows (devices): the decision then takes each leaf from the row that set it last.
    stamps: Mapping[str, str] | None = None


class Directory(Protocol):
    """What the preferences service needs from the central store."""

    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def deployment_secret(self, name: str, make: Callable[[], str]) -> str:
        """The named secret, made with ``make`` and stored by the first node that asks."""

    async def link_once(self, nonce: str, expires_at: int, now: int, links: Sequence[Link]) -> bool:
        """Store the links of an identity token the first time its nonce is seen (on any
        node), both in one transaction; False, and nothing stored, for a replay. Forgets
        expired nonces (a few per call), so the table holds only tokens still alive."""

    async def add_key(self, key: StoredKey) -> None: ...

    async def get_key(self, key_id: str) -> StoredKey | None: ...

    async def list_keys(self, site: str | None) -> list[StoredKey]: ...

    async def revoke_key(self, key_id: str, at: str) -> bool:
        """Whether a key that was not yet revoked is now."""

    async def link(self, links: Sequence[Link]) -> None:
        """Store every link, or none (one transaction); linking twice is a no-op."""

    async def subjects_for(self, site: str, identity_hash: str) -> list[str]:
        """Subjects linked to the identity, most recently linked first (bounded)."""

    async def identity_types(self, site: str, subject_id: str) -> list[str]:
        """The types of the identities linked to a subject, sorted."""

    async def identities_of(
        self, site: str, subject_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, str]]]:
        """(type, keyed hash) of the identities linked to each subject (sorted; subjects with
        none are left out)."""

    async def stamps_of(
        self, site: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, str]]:
        """The leaf stamps of the states of these (subject, product line) keys."""

    async def write_preferences(self, states: Sequence[PreferenceState]) -> None:
        """Keep the newest state per (site, subject, product line), by (updated_at, record_id)."""

    async def preferences_of(self, site: str, subject_id: str) -> list[PreferenceState]: ...

    async def contact_rows(
        self, site: str, identity_hashes: Sequence[str], product_line: str
    ) -> list[ContactRow]:
        """For each hash, its linked subjects with their states for the product line and for
        "" (a row per state; one row with no state for a subject that has none)."""
