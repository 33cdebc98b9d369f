"""Event stream sink: every record published to NATS JetStream, one message per record.

Subject ``<prefix>.consent.recorded.<site>``, payload the record's JSON, header
``Nats-Msg-Id: <record_id>``: JetStream drops a message whose id it has seen within the
stream's duplicate window, so the forwarder's at-least-once redelivery (a retried batch, a
restart after a crash between publish and outbox ack) lands exactly once in the stream.
Consumers (CDPs, marketing automation) read the stream at their own pace with their own
durable consumers; the gateway never waits for them.

The connection is made lazily and kept: when NATS is down at start-up or later, ``write_*``
raises ``SinkError`` and the forwarder retries with backoff while the outbox holds the records.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import nats
import orjson
from nats.aio.client import Client
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from gateway.core.record_codec import Record
from gateway.sinks.base import PermanentSinkError, SinkError
from gateway.sinks.cloudevents import event_type

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
EVENT = "consent.recorded"
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")  # a subject token: no dots, wildcards or spaces


class JetStreamSink:
    """Publishes batches to one stream; the stream is created when missing."""

    name = "nats"

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        subject_prefix: str,
        duplicate_window: float,
        connect_timeout: float = 5.0,
        ack_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.duplicate_window = duplicate_window
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self.duplicates = 0  # redeliveries JetStream recognised and dropped
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()

    @property
    def where(self) -> str:
        """The server without credentials a URL may carry (``nats://user:token@host``), for
        errors that reach logs, ``/readyz`` and ``outbox status``."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 4222}"

    def subject(self, site: str, event: str = EVENT) -> str:
        return f"{self.subject_prefix}.{event}.{site}"

    async def open(self) -> None:
        try:
            await self._connected()
        except SinkError as exc:  # the outbox holds records until NATS is back
            log.warning("nats: not connected at start-up, will retry: %s", exc)

    async def _connected(self) -> JetStreamContext:
        async with self._lock:
            if self._js is not None and self._nc is not None and not self._nc.is_closed:
                return self._js
            try:
                nc = await nats.connect(
                    self.url,
                    name="consent-gateway",
                    connect_timeout=self.connect_timeout,
                    # A few quick reconnects ride out a NATS restart; past them the client
                    # closes and the next write connects afresh. (-1, "forever", would also
                    # make this first connect to a server that is down never return.)
                    allow_reconnect=True,
                    max_reconnect_attempts=3,
                    reconnect_time_wait=1,
                )
            except Exception as exc:  # nats raises several unrelated types for "no server"
                raise SinkError(f"nats: cannot connect to {self.where}: {exc!r}") from exc
            js = nc.jetstream(timeout=self.ack_timeout)
            try:
                await self._ensure_stream(js)
            except Exception as exc:
                await nc.close()
                raise SinkError(f"nats: stream {self.stream}: {exc!r}") from exc
            self._nc, self._js = nc, js
            return js

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Create the stream when missing; an existing one is the operator's and kept as is."""
        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=self.stream,
                    subjects=[f"{self.subject_prefix}.>"],
                    storage=StorageType.FILE,
                    duplicate_window=self.duplicate_window,
                )
            )
            log.info("nats: created stream %s for %s.>", self.stream, self.subject_prefix)

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    async def _acknowledged(self, pending: list[asyncio.Future[Any]]) -> set[asyncio.Future[Any]]:
        """Every future once acknowledged; ``SinkError`` after ``ack_timeout``, or sooner when
        the client gives up on the server (its lost acknowledgements would never come)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ack_timeout
        done: set[asyncio.Future[Any]] = set()
        late: set[asyncio.Future[Any]] = set(pending)
        while late:
            left = deadline - loop.time()
            closed = self._nc is None or self._nc.is_closed
            if left <= 0 or closed:
                for future in late:
                    future.cancel()
                why = "the connection closed" if closed else f"{self.ack_timeout}s passed"
                raise SinkError(
                    f"nats: {len(late)} of {len(pending)} message(s) not acknowledged ({why})"
                )
            finished, late = await asyncio.wait(late, timeout=min(left, 0.25))
            done |= finished
        return done

    async def write_batch(self, records: Sequence[Record]) -> None:
        await self.write_objects([r.as_json() for r in records])

    async def write_objects(self, objects: Sequence[Mapping[str, Any]]) -> None:
        js = await self._connected()
        refused: list[str] = []
        reasons: list[str] = []
        pending: list[asyncio.Future[Any]] = []
        try:
            for obj in objects:
                record_id, site = str(obj["record_id"]), str(obj["site"])
                if not _TOKEN.fullmatch(site):
                    refused.append(record_id)
                    reasons.append(f"site {site!r} is not a NATS subject token")
                    continue
                try:
                    future = await js.publish_async(
                        self.subject(site, event_type(obj)),
                        orjson.dumps(obj),
                        stream=self.stream,
                        headers={MSG_ID_HEADER: record_id},
                    )
                except MaxPayloadError as exc:
                    refused.append(record_id)
                    reasons.append(f"larger than the server's max payload: {exc}")
                    continue
                pending.append(future)
            if pending:
                done = await self._acknowledged(pending)
                for future in done:
                    ack = future.result()  # raises the server's error for that message
                    if ack.duplicate:
                        self.duplicates += 1
        except SinkError:
            raise
        except Exception as exc:  # connection lost, stream gone, server error: retry later
            for future in pending:
                future.cancel()
            raise SinkError(f"nats: publish failed: {exc!r}") from exc
        if refused:
            raise PermanentSinkError(refused, "; ".join(sorted(set(reasons))))
