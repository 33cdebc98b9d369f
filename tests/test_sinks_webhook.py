"""The webhook sink against a real local HTTP server: signature, retries, refusals."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.recording.forwarder import Forwarder
from gateway.recording.outbox.database import FILE_NAME
from gateway.recording.outbox.group_commit import Outbox
from gateway.sinks.base import PermanentSinkError, SinkError
from gateway.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSink, sign
from tests.pg import eventually, make_record
from tests.procs import free_port

SECRET = "webhook-secret"


@dataclass
class Receiver:
    """A CRM endpoint that answers with the next scripted status."""

    statuses: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        timestamp = request.headers[TIMESTAMP_HEADER]
        expected = (
            "sha256="
            + hmac.new(
                SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256
            ).hexdigest()
        )
        signed = hmac.compare_digest(expected, request.headers[SIGNATURE_HEADER])
        self.received.append({"signed": signed, "body": orjson.loads(body)})
        return Response(status_code=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(port=free_port())
    app = Starlette(routes=[Route("/hook", rec.handle, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=rec.port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started)
    yield rec
    server.should_exit = True
    await task


@pytest.fixture
async def sink(receiver: Receiver) -> AsyncIterator[WebhookSink]:
    s = WebhookSink(f"http://127.0.0.1:{receiver.port}/hook", SECRET, timeout=2)
    await s.open()
    yield s
    await s.close()


async def test_batch_is_posted_signed(sink: WebhookSink, receiver: Receiver) -> None:
    records = [make_record("a"), make_record("b")]
    await sink.write_batch(records)
    assert receiver.received[0]["signed"] is True
    assert receiver.received[0]["body"] == {"records": [r.as_json() for r in records]}


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (401, True), (404, True), (422, True),
     (408, False), (429, False), (500, False), (503, False)],
)  # fmt: skip
async def test_status_classification(
    sink: WebhookSink, receiver: Receiver, status: int, permanent: bool
) -> None:
    receiver.statuses.append(status)
    records = [make_record("a")]
    with pytest.raises(SinkError) as info:
        await sink.write_batch(records)
    assert isinstance(info.value, PermanentSinkError) is permanent
    if permanent:
        assert info.value.record_ids == (records[0].record_id,)  # type: ignore[attr-defined]
    await sink.write_batch(records)  # the retry succeeds once the receiver recovers
    assert len(receiver.received) == 2


async def test_unreachable_receiver_is_transient() -> None:
    sink = WebhookSink(f"http://127.0.0.1:{free_port()}/hook", SECRET, timeout=1)
    await sink.open()
    with pytest.raises(SinkError) as info:
        await sink.write_batch([make_record()])
    assert not isinstance(info.value, PermanentSinkError)
    await sink.close()


def test_signature_covers_timestamp_and_body() -> None:
    a = sign(b"k", "100", b"{}")
    assert a.startswith("sha256=")
    assert a != sign(b"k", "101", b"{}")
    assert a != sign(b"k", "100", b"{ }")


async def test_forwarder_posts_the_stored_json_signed(
    sink: WebhookSink, receiver: Receiver, tmp_path: Path
) -> None:
    outbox = Outbox(tmp_path / FILE_NAME, durability="process")
    await outbox.open()
    records = [make_record(f"w{i}") for i in range(3)]
    for r in records:
        await outbox.append(r, "x")
    receiver.statuses.append(503)  # first attempt fails, the retry is delivered
    forwarder = Forwarder(outbox, [sink], base_backoff=0.01)
    forwarder.start()
    await eventually(lambda: outbox.depth == 0)
    await forwarder.stop(drain=1)
    await outbox.close()
    assert len(receiver.received) == 2
    assert all(r["signed"] for r in receiver.received)
    assert receiver.received[1]["body"] == {"records": [r.as_json() for r in records]}
