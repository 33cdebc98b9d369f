"""The NATS JetStream sink against real servers: publish, dedupe redeliveries, read back,
survive NATS being down or restarted (a private server), and the settings that choose it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from nats.js.errors import NotFoundError

from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.sinks import open_sinks
from gateway.sinks.base import JsonSink, ObjectSink, PermanentSinkError, SinkError
from gateway.sinks.jetstream import MSG_ID_HEADER, JetStreamSink
from tests.natsd import NatsServer, jetstream, read_stream, shared_url, unique
from tests.pg import make_record


def sink_for(url: str, stream: str, prefix: str, **kw: float) -> JetStreamSink:
    return JetStreamSink(url, stream=stream, subject_prefix=prefix, duplicate_window=600, **kw)


@pytest.fixture
async def shared() -> AsyncIterator[JetStreamSink]:
    """A sink on the shared server with a stream of its own, deleted afterwards."""
    url = shared_url()
    sink = sink_for(url, unique("TEST_CONSENT"), unique("test_gw"))
    await sink.open()
    yield sink
    await sink.close()
    async with jetstream(url) as js:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(sink.stream)


async def test_records_are_published_once_each_and_a_consumer_reads_them_back(
    shared: JetStreamSink,
) -> None:
    records = [make_record(f"s{i}", site="demo" if i % 2 else "shop") for i in range(50)]
    await shared.write_batch(records)
    async with jetstream(shared.url) as js:
        info = await js.stream_info(shared.stream)
        assert info.config.subjects == [f"{shared.subject_prefix}.>"]
        assert info.config.duplicate_window == 600
        messages = await read_stream(js, shared.stream)
    assert [orjson.loads(m.data) for m in messages] == [r.as_json() for r in records]
    assert [m.headers[MSG_ID_HEADER] for m in messages] == [r.record_id for r in records]
    assert {m.subject for m in messages} == {
        f"{shared.subject_prefix}.consent.recorded.demo",
        f"{shared.subject_prefix}.consent.recorded.shop",
    }


async def test_a_redelivered_batch_is_deduplicated_by_record_id(shared: JetStreamSink) -> None:
    # The forwarder redelivers a batch whose ack it lost (retry, crash before the outbox ack).
    first = [make_record(f"a{i}") for i in range(20)]
    await shared.write_objects([r.as_json() for r in first])
    again = [*first[10:], *(make_record(f"b{i}") for i in range(5))]
    await shared.write_objects([r.as_json() for r in again])
    assert shared.duplicates == 10
    async with jetstream(shared.url) as js:
        messages = await read_stream(js, shared.stream)
    ids = [m.headers[MSG_ID_HEADER] for m in messages]
    assert ids == [r.record_id for r in first] + [r.record_id for r in again[10:]]


async def test_a_record_whose_site_is_no_subject_token_is_refused_for_good(
    shared: JetStreamSink,
) -> None:
    good, bad = make_record("x"), make_record("y", site="a.b")
    with pytest.raises(PermanentSinkError) as caught:
        await shared.write_batch([good, bad])
    assert caught.value.record_ids == (bad.record_id,)
    async with jetstream(shared.url) as js:
        assert (await js.stream_info(shared.stream)).state.messages == 1


async def test_errors_name_the_server_but_never_the_credentials_in_its_url() -> None:
    # Threat: a token in GATEWAY_NATS_URL copied into logs and the readiness report.
    sink = sink_for("nats://gateway:s3cret-token@127.0.0.1:1", "S", "p", connect_timeout=0.5)
    with pytest.raises(SinkError) as caught:
        await sink.write_batch([make_record("x")])
    assert "nats://127.0.0.1:1" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_the_forwarder_hands_the_sink_decoded_objects() -> None:
    sink = sink_for("nats://127.0.0.1:1", "S", "p")
    assert isinstance(sink, ObjectSink) and not isinstance(sink, JsonSink)


async def test_nats_down_at_start_up_then_back_and_restarted(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "js")
    sink = sink_for(server.url, "CONSENT", "gw", connect_timeout=1, ack_timeout=2)
    await sink.open()  # nothing listens yet: the gateway still starts
    with pytest.raises(SinkError, match="cannot connect"):
        await sink.write_batch([make_record("early")])
    server.start()
    try:
        early = make_record("early")
        await sink.write_batch([early])
        server.kill()  # kill -9: no goodbye to the client
        with pytest.raises(SinkError):
            await sink.write_batch([make_record("lost")])
        server.start()  # same port and store: the client reconnects by itself
        late = [make_record(f"late{i}") for i in range(10)]
        for _ in range(50):  # the forwarder's retries, compressed
            try:
                await sink.write_batch([early, *late])
                break
            except SinkError:
                continue
        async with jetstream(server.url) as js:
            messages = await read_stream(js, "CONSENT")
        ids = [m.headers[MSG_ID_HEADER] for m in messages]
        assert ids == [early.record_id, *(r.record_id for r in late)]
        assert sink.duplicates >= 1  # ``early`` came again and was dropped
    finally:
        await sink.close()
        server.stop()


def test_settings_add_the_nats_sink_and_refuse_bad_names(tmp_path: Path) -> None:
    base = Settings(data_dir=tmp_path)
    assert [s.name for s in open_sinks(base)] == ["sqlite"]
    sinks = open_sinks(
        base.replace(
            nats_url="nats://127.0.0.1:4222",
            nats_stream="EVENTS",
            nats_subject_prefix="acme.consent",
        )
    )
    nats_sink = sinks[-1]
    assert isinstance(nats_sink, JetStreamSink)
    assert nats_sink.subject("demo") == "acme.consent.consent.recorded.demo"
    for bad in (
        {"nats_url": "http://x"},
        {"nats_url": "nats://x", "nats_stream": "A.B"},
        {"nats_url": "nats://x", "nats_subject_prefix": "a.>"},
    ):
        with pytest.raises(ConfigError):
            open_sinks(base.replace(**bad))
