"""The central store's rights tables: requests, their transitions, downstream confirmations,
events waiting for delivery, and the erasure of a subject's personal data.

Kept in the same database as the records and the directory (erasure must reach them in one
transaction), in tables of their own. Times are RFC 3339 UTC text of fixed width
(``2026-01-31T12:00:00.000000Z``): text order is time order in every store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import orjson

from gateway.core.model import ConsentRecord

# What erasure blanks in a stored record: who the visitor was (IP prefix, user agent), what
# page they were on, and the client's free-text idempotency key. What remains (site, subject
# id, time, banner version, action, choices, rule, region, signals) proves what was consented
# when, and the record's original content hash is kept beside it (Tombstone).
ERASED_FIELDS: Mapping[str, Any] = {
    "ip_truncated": None,
    "user_agent": "",
    "page_url": "",
    "idempotency_key": None,
}
# The same of a preference record (it has no page).
PREFERENCE_ERASED_FIELDS: Mapping[str, Any] = {
    "ip_truncated": None,
    "user_agent": "",
    "idempotency_key": None,
}


@dataclass(frozen=True)
class StoredRequest:
    request_id: str
    site: str
    type: str
    state: str
    rule_id: str
    region: Mapping[str, Any]  # {"country", "subdivision"}
    verification: str  # "receipt", "email", "api_key"
    subject_ids: tuple[str, ...]
    identity_type: str | None
    identity_hash: str | None
    token_hash: str
    code_hash: str | None
    code_expires_at: int | None  # Unix seconds
    code_attempts: int
    details: Mapping[str, Any]
    language: str
    received_at: str
    due_at: str
    updated_at: str
    gateway_done_at: str | None = None
    reason: str = ""
    result: Mapping[str, Any] = field(default_factory=dict)  # what the gateway's part did


@dataclass(frozen=True)
class Transition:
    request_id: str
    from_state: str | None
    to_state: str
    actor: str  # "subject", "system", "admin", "api_key:<id>", "system:<name>"
    reason: str
    at: str


@dataclass(frozen=True)
class SystemPart:
    request_id: str
    system: str
    required: bool
    state: str  # "pending", "done", "failed"
    note: str = ""
    confirmed_at: str | None = None
    reminded_at: str | None = None
    reminders: int = 0


@dataclass(frozen=True)
class Event:
    seq: int
    request_id: str
    type: str
    body: Mapping[str, Any]
    created_at: str


@dataclass(frozen=True)
class Relink:
    """A correction: the subjects' links to ``unlink`` hashes go, ``(type, hash)`` links come."""

    site: str
    subject_ids: Sequence[str]
    unlink: Sequence[str]
    link: Sequence[tuple[str, str]]
    at: str


@dataclass(frozen=True)
class Erasure:
    """What one erasure changed, counted per store table."""

    records: int = 0
    identity_links: int = 0
    preference_states: int = 0


# How a request is stored: one column per field; the JSON ones as JSON text.
COLUMNS = tuple(f.name for f in fields(StoredRequest))
JSON_COLUMNS = frozenset({"region", "subject_ids", "details", "result"})
OPEN_STATES = ("received", "verifying", "in_progress", "extended")


def column_value(name: str, value: Any) -> Any:
    """A request field's value as its column holds it."""
    if name in JSON_COLUMNS:
        return orjson.dumps(list(value) if name == "subject_ids" else value).decode()
    return value


def request_from(row: Mapping[str, Any]) -> StoredRequest:
    """The request a row of columns (by name) holds."""
    data = {n: row[n] for n in COLUMNS}
    for name in JSON_COLUMNS:
        data[name] = orjson.loads(data[name])
    data["subject_ids"] = tuple(data["subject_ids"])
    return StoredRequest(**data)


def content_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON: what its receipt signs (recording/receipts.py)."""
    record = ConsentRecord.from_json(body)
    return hashlib.sha256(
        orjson.dumps(record.plain_json(), option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


def tombstone(row: Sequence[Any]) -> dict[str, Any]:
    """A tombstone row (record_id, content_hash, erased_fields, erased_at, request_id)."""
    return {
        "record_id": row[0],
        "content_hash": row[1],
        "erased_fields": orjson.loads(row[2]),
        "erased_at": row[3],
        "request_id": row[4],
    }


class RightsStore(Protocol):
    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create(
        self,
        request: StoredRequest,
        transition: Transition,
        systems: Sequence[SystemPart],
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> None:
        """Store a new request with its first transition, system parts and events at once."""

    async def get(self, request_id: str) -> StoredRequest | None: ...

    async def update(
        self,
        request_id: str,
        expect_state: str,
        changes: Mapping[str, Any],
        transition: Transition | None,
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> bool:
        """Apply ``changes`` (StoredRequest field names) only if the request is still in
        ``expect_state``, with the transition and events, in one transaction."""

    async def count_attempt(self, request_id: str) -> int:
        """Add one failed code attempt; the new count."""

    async def recent_by_identity(self, site: str, identity_hash: str, since: str) -> int:
        """Requests made for this identity since ``since`` (flood limit of code e-mails)."""

    async def listing(
        self,
        site: str | None,
        type_: str | None,
        states: Sequence[str] | None,
        overdue_at: str | None,
        limit: int,
    ) -> list[StoredRequest]:
        """Newest first; ``overdue_at``: only open requests due before that time."""

    async def transitions(self, request_id: str) -> list[Transition]: ...

    async def systems(self, request_id: str) -> list[SystemPart]: ...

    async def confirm_system(
        self,
        request_id: str,
        system: str,
        state: str,
        note: str,
        at: str,
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> bool:
        """Record a system's answer once (a repeated confirmation changes nothing)."""

    async def remind_system(
        self,
        request_id: str,
        system: str,
        at: str,
        events: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> None: ...

    async def pending_events(self, limit: int) -> list[Event]: ...

    async def delivered(self, seqs: Sequence[int], at: str) -> None: ...

    async def erase(
        self, site: str, subject_ids: Sequence[str], request_id: str, at: str
    ) -> Erasure:
        """Blank ERASED_FIELDS in the subjects' records (keeping a tombstone with each
        record's original content hash), delete their identity links and the free-form
        extras of their preference states: one transaction."""

    async def relink(
        self,
        site: str,
        subject_ids: Sequence[str],
        unlink: Sequence[str],
        link: Sequence[tuple[str, str]],
        at: str,
    ) -> None:
        """Correction: drop links to the ``unlink`` hashes, add ``(type, hash)`` links."""

    async def tombstones(self, site: str, subject_id: str) -> list[dict[str, Any]]: ...

    async def erase_reasons(self, request_ids: Sequence[str]) -> int:
        """Erase the free-text reasons of the requests' transitions (NULL), keeping their
        chain links verifiable (gateway/sinks/rights_chain.py); how many were erased."""
