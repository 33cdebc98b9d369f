"""Fan-out sink: POST each batch as JSON to a CDP / CRM endpoint, signed with HMAC-SHA256.

Headers: ``X-Consent-Timestamp: <unix seconds>`` and ``X-Consent-Signature: sha256=<hex>``,
the HMAC of ``<timestamp>.<body>`` so a captured request cannot be replayed later with a
new timestamp. Receivers should dedupe on ``record_id``: delivery is at least once.

The body is ``{"records": [record, …]}`` (every kind: consents, preference changes with
``"kind": "preference"``, identity links with ``"kind": "identity_link"``), or with
``cloudevents`` a JSON array of CloudEvents 1.0 structured-mode events
(``application/cloudevents-batch+json``, see ``cloudevents``) whose ``id`` is the record id.
``EventWebhookSink`` (``GATEWAY_WEBHOOK_DATA=events``) sends ``{"events": [event, …]}``
instead: core/events.py, each with the subject's linked identities read from the directory.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from gateway.core.events import record_event
from gateway.core.record_codec import Record
from gateway.sinks.base import PermanentSinkError, SinkError
from gateway.sinks.cloudevents import BATCH_CONTENT_TYPE, envelope, wrap
from gateway.sinks.directory import Directory
from gateway.sinks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "EventWebhookSink", "WebhookSink", "sign"]

_TRANSIENT_4XX = (408, 425, 429)


class WebhookSink:
    """Delivers batches to one URL; 4xx (but 408/425/429) refuses the batch for good."""

    name = "webhook"

    def __init__(
        self, url: str, secret: str, *, timeout: float = 10.0, cloudevents: bool = False
    ) -> None:
        self.url = url
        self.cloudevents = cloudevents
        self._secret = secret.encode("utf-8")
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def write_batch(self, records: Sequence[Record]) -> None:
        if self.cloudevents:
            body = orjson.dumps([envelope(r.as_json()) for r in records])
        else:
            body = orjson.dumps({"records": [r.as_json() for r in records]})
        await self._post(body, [r.record_id for r in records])

    async def write_json(self, record_ids: Sequence[str], bodies: Sequence[str]) -> None:
        if self.cloudevents:
            body = orjson.dumps([envelope(orjson.loads(b)) for b in bodies])
        else:
            body = ('{"records":[' + ",".join(bodies) + "]}").encode()
        await self._post(body, record_ids)

    async def _post(self, body: bytes, record_ids: Sequence[str]) -> None:
        if self._client is None:
            raise SinkError("the webhook sink is not open")
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": BATCH_CONTENT_TYPE if self.cloudevents else "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SinkError(f"webhook: {exc!r}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        if 400 <= status < 500 and status not in _TRANSIENT_4XX:
            raise PermanentSinkError(
                record_ids,
                f"webhook answered {status}: {response.text[:200]}",
            )
        raise SinkError(f"webhook answered {status}")


class EventWebhookSink(WebhookSink):
    """The webhook in events mode: each record as its event (core/events.py), carrying the
    identities linked to its subject from the directory (their types and keyed hashes)."""

    def __init__(
        self,
        url: str,
        secret: str,
        directory: Directory,
        *,
        timeout: float = 10.0,
        cloudevents: bool = False,
    ) -> None:
        super().__init__(url, secret, timeout=timeout, cloudevents=cloudevents)
        self.directory = directory

    async def open(self) -> None:
        await super().open()
        await self.directory.open()

    async def close(self) -> None:
        await super().close()
        await self.directory.close()

    async def write_batch(self, records: Sequence[Record]) -> None:
        await self.write_objects([r.as_json() for r in records])

    async def write_objects(self, objects: Sequence[Mapping[str, Any]]) -> None:
        by_site: dict[str, set[str]] = {}
        for obj in objects:
            by_site.setdefault(str(obj["site"]), set()).add(str(obj["subject_id"]))
        links: dict[tuple[str, str], list[tuple[str, str]]] = {}
        try:
            for site, subjects in by_site.items():
                found = await self.directory.identities_of(site, sorted(subjects))
                links.update({(site, s): pairs for s, pairs in found.items()})
        except Exception as exc:  # the directory is down: the batch is retried
            raise SinkError(f"webhook: reading linked identities failed: {exc!r}") from exc
        events = [
            record_event(obj, links.get((str(obj["site"]), str(obj["subject_id"])), []))
            for obj in objects
        ]
        if self.cloudevents:
            body = orjson.dumps([wrap(e) for e in events])
        else:
            body = orjson.dumps({"events": events})
        await self._post(body, [str(obj["record_id"]) for obj in objects])
