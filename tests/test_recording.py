"""The sans-IO recording core: parsing, validation rules, enrichment, ids and times."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import orjson
import pytest

from gateway.core.errors import BadRequest
from gateway.core.model import ConsentRecord, Region, Rule
from gateway.recording.consent import (
    MAX_BODY_BYTES,
    RecordContext,
    Uuid7Clock,
    enrich,
    parse_body,
    rfc3339_utc,
    truncate_ip,
    validate,
)
from tests.pg import consent_body, demo_bundle

BUNDLE = demo_bundle()
SITE = BUNDLE.site
VERSIONS = BUNDLE.known_versions


def body(**changes: Any) -> dict[str, Any]:
    data = consent_body(BUNDLE, "subject-1")
    for key, value in changes.items():
        if value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def test_valid_accept_all_lists_every_purpose() -> None:
    consent = validate(body(), SITE, VERSIONS)
    assert consent.action == "accept_all"
    assert consent.channel == "web"
    assert set(consent.choices) == {p.id for p in SITE.purposes}
    assert all(consent.choices.values())


def test_custom_choice_keeps_each_value_and_grants_essential() -> None:
    choices = {"analytics": True, "marketing": False, "personalization": False}
    consent = validate(body(action="custom", choices=choices), SITE, VERSIONS)
    assert consent.choices == {**choices, "necessary": True}


@pytest.mark.parametrize(
    ("changes", "code", "field", "status"),
    [
        ({"subject_id": ...}, "missing_field", "subject_id", 400),
        ({"subject_id": ""}, "invalid_field", "subject_id", 400),
        ({"subject_id": "a" * 129}, "invalid_field", "subject_id", 400),
        ({"subject_id": "a/b"}, "invalid_field", "subject_id", 400),
        ({"subject_id": "a\x00b"}, "invalid_field", "subject_id", 400),
        ({"subject_id": 12}, "invalid_field", "subject_id", 400),
        ({"banner_version": ...}, "missing_field", "banner_version", 400),
        ({"banner_version": "nope"}, "unknown_banner_version", "banner_version", 422),
        ({"action": ...}, "missing_field", "action", 400),
        ({"action": "maybe"}, "invalid_field", "action", 400),
        ({"action": ["accept_all"]}, "invalid_field", "action", 400),
        ({"channel": "fax"}, "invalid_field", "channel", 400),
        ({"language": "english!"}, "invalid_field", "language", 400),
        ({"page_url": "javascript:alert(1)"}, "invalid_field", "page_url", 400),
        ({"page_url": "https://x/" + "a" * 2048}, "invalid_field", "page_url", 400),
        ({"page_url": "https://x/\n"}, "invalid_field", "page_url", 400),
        ({"idempotency_key": "k" * 129}, "invalid_field", "idempotency_key", 400),
        ({"idempotency_key": "with space"}, "invalid_field", "idempotency_key", 400),
        ({"withdraws": "not-a-uuid"}, "invalid_field", "withdraws", 400),
        ({"choices": ...}, "missing_field", "choices", 400),
        ({"choices": []}, "invalid_field", "choices", 400),
        ({"choices": {f"p{i}": True for i in range(65)}}, "invalid_field", "choices", 400),
        (
            {"choices": {"analytics": "yes", "marketing": True, "personalization": True}},
            "invalid_field", "choices.analytics", 400,
        ),
        (
            {"choices": {"analytics": True, "marketing": True, "personalization": True,
                         "telepathy": True}},
            "unknown_purpose", "choices.telepathy", 422,
        ),
        (
            {"action": "custom", "choices": {"analytics": True, "marketing": True}},
            "missing_choice", "choices.personalization", 422,
        ),
        (
            {"choices": {"necessary": False, "analytics": True, "marketing": True,
                         "personalization": True}},
            "essential_refused", "choices.necessary", 422,
        ),
        (
            {"choices": {"analytics": False, "marketing": True, "personalization": True}},
            "inconsistent_action", "choices.analytics", 422,
        ),
        (
            {"action": "reject_all"},
            "inconsistent_action", "choices.analytics", 422,
        ),
        (
            {"action": "withdraw"},
            "inconsistent_action", "choices.analytics", 422,
        ),
        (
            {"action": "gpc"},
            "inconsistent_action", "choices.marketing", 422,
        ),
    ],
)  # fmt: skip
def test_invalid_bodies_name_the_field(
    changes: dict[str, Any], code: str, field: str, status: int
) -> None:
    with pytest.raises(BadRequest) as info:
        validate(body(**changes), SITE, VERSIONS)
    assert (info.value.code, info.value.field, info.value.status_code) == (code, field, status)


def test_gpc_action_needs_only_sale_or_share_purposes_refused() -> None:
    choices = {"analytics": True, "marketing": False, "personalization": True}
    assert validate(body(action="gpc", choices=choices), SITE, VERSIONS).action == "gpc"


def test_retained_version_is_accepted() -> None:
    consent = validate(body(banner_version="old-1"), SITE, {*VERSIONS, "old-1"})
    assert consent.banner_version == "old-1"


@pytest.mark.parametrize(
    ("raw", "content_type", "code", "status"),
    [
        (b"{", "application/json", "invalid_json", 400),
        (b"\xff\xfe{}", "application/json", "invalid_json", 400),
        (b"[1, 2]", "application/json", "invalid_body", 400),
        (b'"text"', "text/plain;charset=UTF-8", "invalid_body", 400),
        (b"{}", "application/xml", "unsupported_media_type", 415),
        (b"{}", "", "unsupported_media_type", 415),
        (b"{}", "text/plain; charset=latin-1", "unsupported_charset", 415),
        (b" " * (MAX_BODY_BYTES + 1), "application/json", "body_too_large", 413),
        (b'{"a": "\\ud800"}', "application/json", "invalid_json", 400),
    ],
)
def test_parse_body_rejects(raw: bytes, content_type: str, code: str, status: int) -> None:
    with pytest.raises(BadRequest) as info:
        parse_body(raw, content_type)
    assert (info.value.code, info.value.status_code) == (code, status)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "text/plain;charset=UTF-8", "Application/JSON; charset=utf-8"],
)
def test_parse_body_accepts_json_and_beacon_text(content_type: str) -> None:
    assert parse_body(orjson.dumps(body()), content_type)["action"] == "accept_all"


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),
        ("not-an-ip", None),
        (None, None),
        ("", None),
    ],
)
def test_truncate_ip(ip: str | None, expected: str | None) -> None:
    assert truncate_ip(ip) == expected


def test_enrich_never_keeps_the_raw_ip_and_bounds_headers() -> None:
    consent = validate(body(language="de"), SITE, VERSIONS)
    context = RecordContext(
        ip="203.0.113.77",
        region=Region("DE", None, "header"),
        rule=Rule(id="eu-gdpr", model="opt-in"),
        gpc=True,
        user_agent="UA\x00\n" + "x" * 2000,
        origin="http://127.0.0.1:8000",
        language="en",
        consent_revision="rev1",
    )
    record = enrich(consent, context, record_id="r", recorded_at="t", node_id="n")
    assert record.ip_truncated == "203.0.113.0/24"
    assert "203.0.113.77" not in orjson.dumps(record.as_json()).decode()
    assert record.user_agent.startswith("UAxx")
    assert len(record.user_agent) == 512
    assert (record.language, record.rule_id, record.gpc) == ("de", "eu-gdpr", True)
    assert (record.region_country, record.region_source) == ("DE", "header")
    assert record.consent_revision == "rev1"
    # enrich builds the record without the dataclass __init__: it must set every field,
    # and nothing else, or the record would differ from ConsentRecord(**fields).
    assert record.__dict__.keys() == {f.name for f in dataclasses.fields(ConsentRecord)}
    assert record == ConsentRecord(**record.__dict__)


def test_uuid7_layout_and_order() -> None:
    clock = Uuid7Clock()
    base_ns = 1_767_225_600_123_000_000
    ids = [clock.next(base_ns)[0] for _ in range(5000)]  # same millisecond: counter overflows
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    first = uuid.UUID(ids[0])
    assert first.version == 7
    assert first.variant == uuid.RFC_4122
    assert first.int >> 80 == base_ns // 1_000_000


def test_uuid7_never_goes_back_when_the_clock_does() -> None:
    clock = Uuid7Clock()
    later, _ = clock.next(2_000_000_000_000_000_000)
    earlier, _ = clock.next(1_000_000_000_000_000_000)
    assert earlier > later


def test_rfc3339_utc_is_fixed_width_microseconds() -> None:
    assert rfc3339_utc(1_767_225_600_000_001_999) == "2026-01-01T00:00:00.000001Z"
    assert rfc3339_utc(0) == "1970-01-01T00:00:00.000000Z"
