"""The contract every central store and fan-out target implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from gateway.core.record_codec import Record


class SinkError(Exception):
    """A sink failed; the forwarder retries the batch with backoff."""


class PermanentSinkError(SinkError):
    """A sink refuses these records for good; they go to the dead-letter table."""

    def __init__(self, record_ids: Sequence[str], reason: str) -> None:
        super().__init__(f"{len(record_ids)} record(s) refused: {reason}")
        self.record_ids = tuple(record_ids)
        self.reason = reason


@runtime_checkable
class Sink(Protocol):
    """Where the forwarder delivers records; ``write_batch`` is idempotent on record_id."""

    name: str

    async def open(self) -> None: ...

    async def write_batch(self, records: Sequence[Record]) -> None:
        """Commit every record, or raise: ``PermanentSinkError`` for refused records (the
        others committed), any other exception for a transient failure of the whole batch."""

    async def close(self) -> None: ...


@runtime_checkable
class JsonSink(Sink, Protocol):
    """A sink that also takes records as their stored JSON (the forwarder's fast path)."""

    async def write_json(self, record_ids: Sequence[str], bodies: Sequence[str]) -> None:
        """Like ``write_batch``; ``bodies[i]`` is the JSON object of ``record_ids[i]``."""


@runtime_checkable
class ObjectSink(Sink, Protocol):
    """A sink that takes records as their decoded JSON objects (the forwarder decodes once)."""

    async def write_objects(self, objects: Sequence[Mapping[str, Any]]) -> None:
        """Like ``write_batch``; each object has exactly the keys of its record's ``as_json``."""


@runtime_checkable
class StoredSink(Sink, Protocol):
    """A sink that keeps each record's stored JSON as it is and reads fields from its decoded
    object (the embedded store): the forwarder has both, so neither is made again."""

    async def write_stored(
        self, bodies: Sequence[str], objects: Sequence[Mapping[str, Any]]
    ) -> None:
        """Like ``write_batch``; ``objects[i]`` is ``bodies[i]`` decoded."""


@runtime_checkable
class Store(Sink, Protocol):
    """A sink that can answer reads: the primary (central) store."""

    async def subject_history(self, site: str, subject_id: str) -> dict[str, Any]:
        """``{"current": record | None, "history": [records, newest first]}``."""

    async def preference_history(self, site: str, subject_id: str) -> list[dict[str, Any]]:
        """A subject's preference records, newest first."""

    async def keyed_record(
        self, kind: str, site: str, subject_id: str, key: str, since: str
    ) -> dict[str, Any] | None:
        """The subject's first ``kind`` record (``consent`` or ``preference``) made with
        idempotency key ``key`` at ``since`` (RFC 3339 UTC) or later, or None: a retry that
        another node took first (recording/store_retries.py)."""

    async def publish_version(
        self,
        site_id: str,
        banner_version: str,
        consent_revision: str,
        texts_by_locale: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """Keep the exact texts of a banner version (idempotent per site and version)."""

    async def banner_version(self, site_id: str, banner_version: str) -> dict[str, Any] | None:
        """The stored texts of a version, or None."""

    async def list_versions(self, site_id: str) -> list[dict[str, Any]]:
        """Every stored version of a site, newest first, without texts."""


HISTORY_LIMIT = 1000
