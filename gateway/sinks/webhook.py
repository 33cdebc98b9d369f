"""Fan-out sink: POST each batch as JSON to a CDP / CRM endpoint, signed with HMAC-SHA256.

Headers: ``X-Consent-Timestamp: <unix seconds>`` and ``X-Consent-Signature: sha256=<hex>``,
the HMAC of ``<timestamp>.<body>`` so a captured request cannot be replayed later with a
new timestamp. Receivers should dedupe on ``record_id``: delivery is at least once.

The body is ``{"records": [record, …]}``, or with ``cloudevents`` a JSON array of CloudEvents
1.0 structured-mode events (``application/cloudevents-batch+json``, see ``cloudevents``) whose
``id`` is the record id.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

import httpx
import orjson

from gateway.core.model import ConsentRecord
from gateway.sinks.base import PermanentSinkError, SinkError
from gateway.sinks.cloudevents import BATCH_CONTENT_TYPE, envelope

SIGNATURE_HEADER = "X-Consent-Signature"
TIMESTAMP_HEADER = "X-Consent-Timestamp"
_TRANSIENT_4XX = (408, 425, 429)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value for a body sent at ``timestamp``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


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

    async def write_batch(self, records: Sequence[ConsentRecord]) -> None:
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
