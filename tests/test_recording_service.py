"""RecordingService.record_consent: the recording use case in one call, with a real placement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from starlette.datastructures import Headers

from gateway.app import build_gateway
from gateway.core.errors import BadRequest
from gateway.core.model import ConsentRecord
from gateway.recording.service import Recorded, RecordingService
from gateway.recording.submission import Submission
from gateway.serving.gateway import Gateway
from gateway.sinks.sqlite import SqliteStore
from gateway.sites.versions import publish_current
from tests.helpers import make_settings
from tests.pg import consent_body, secret_of

PROXY = "127.0.0.1"  # a peer the default settings trust, so CDN geo headers count


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[RecordingService, Gateway]]:
    settings = make_settings(tmp_path)
    gateway = build_gateway(settings)
    recording = RecordingService(settings, placement=gateway)
    await recording.start()
    try:
        yield recording, gateway
    finally:
        await recording.stop()
        gateway.locator.close()


def submission(body: bytes, **headers: str) -> Submission:
    raw = Headers(headers={k.replace("_", "-"): v for k, v in headers.items()})
    return Submission(
        body=body,
        content_type="application/json",
        peer=PROXY,
        headers=raw,
        accept_language=raw.get("accept-language"),
        gpc_values=raw.getlist("sec-gpc"),
        user_agent="UA/1",
        origin="",
    )


async def test_one_call_validates_places_enriches_signs_and_appends(
    service: tuple[RecordingService, Gateway],
) -> None:
    recording, _ = service
    bundle = recording.site("demo")
    body = orjson.dumps(consent_body(bundle, "subject-1", idempotency_key="k-1"))
    sent = submission(
        body, cf_ipcountry="US", cf_region_code="CA", sec_gpc="1", accept_language="de"
    )
    result = await recording.record_consent(bundle, sent)
    assert isinstance(result, Recorded) and not result.duplicate
    assert recording.receipts is not None and recording.subjects is not None
    # The subject id is derived from the secret, never taken from the client.
    assert result.subject_id == recording.subjects.subject_id("demo", secret_of("subject-1"))
    claims = recording.receipts.verify(result.receipt)
    assert (claims.site, claims.subject_id, claims.record_id) == (
        "demo",
        result.subject_id,
        result.record_id,
    )
    [item] = await recording.outbox.claim(10)
    record = item.record()
    assert isinstance(record, ConsentRecord)
    assert (record.region_country, record.region_subdivision, record.region_source) == (
        "US",
        "CA",
        "header",
    )
    assert record.rule_id.startswith("ccpa") and record.gpc is True
    assert record.language == "de" and record.ip_truncated == "127.0.0.0/24"
    again = await recording.record_consent(bundle, sent)
    assert again.duplicate and again.receipt == result.receipt


async def test_invalid_input_is_refused_before_anything_is_appended(
    service: tuple[RecordingService, Gateway],
) -> None:
    recording, _ = service
    bundle = recording.site("demo")
    with pytest.raises(BadRequest) as bad:
        await recording.record_consent(bundle, submission(b'{"subject_secret": 1}'))
    assert bad.value.field == "subject_secret"
    with pytest.raises(BadRequest) as unknown:
        recording.site("nope")
    assert (unknown.value.status_code, unknown.value.code) == (404, "unknown_site")
    assert recording.outbox.depth == 0


async def test_publishing_writes_each_current_version_once(
    service: tuple[RecordingService, Gateway], tmp_path: Path
) -> None:
    recording, gateway = service
    assert isinstance(recording.store, SqliteStore)
    await publish_current(gateway.catalog, recording.store)
    await publish_current(gateway.catalog, recording.store)
    stored = await recording.store.list_versions("demo")
    assert [v["banner_version"] for v in stored] == [gateway.catalog.get("demo").banner_version]  # type: ignore[union-attr]
    await publish_current(gateway.catalog, None)  # no readable store: nothing to do, no error
