"""The sans-IO recording core: parsing, validation rules, enrichment, ids and times."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import orjson
import pytest

from gateway.core.errors import BadRequest
from gateway.core.model import ConsentRecord, Purpose, Region, Rule, Site
from gateway.recording.consent import RecordContext, check_rule, enrich, validate
from gateway.recording.fields import (
    MAX_BODY_BYTES,
    Uuid7Clock,
    parse_body,
    rfc3339_utc,
    truncate_ip,
)
from tests.helpers import shipped_rules
from tests.pg import consent_body, demo_bundle

TABLE = shipped_rules()
RULES = TABLE.rules
BUNDLE = demo_bundle()
SITE = BUNDLE.site
VERSIONS = BUNDLE.known_versions


def body(**changes: Any) -> dict[str, Any]:
    # validate() sees the body as RecordingService.bind_subject leaves it: the secret
    # replaced by the subject id derived from it (tests/test_subjects.py covers that step).
    data = consent_body(BUNDLE, "subject-1")
    del data["subject_secret"]
    data["subject_id"] = "subject-1"
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
        ({"age": -1}, "invalid_field", "age", 400),
        ({"age": 131}, "invalid_field", "age", 400),
        ({"age": "15"}, "invalid_field", "age", 400),
        ({"age": True}, "invalid_field", "age", 400),
        ({"age": 15.0}, "invalid_field", "age", 400),
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


ALL = {"analytics": True, "marketing": True, "personalization": True}


def _rule_error(rule: Rule, site: Site = SITE, **changes: Any) -> BadRequest:
    consent = validate(body(**changes), site, VERSIONS)
    with pytest.raises(BadRequest) as info:
        check_rule(consent, site, rule)
    assert info.value.status_code == 422
    return info.value


@pytest.mark.parametrize("rule_id", ["pipl", "pipa", "appi"])
def test_accept_all_never_bundles_a_separate_consent(rule_id: str) -> None:
    """PIPL Arts. 23, 25, 29, 39 (and PIPA Art. 22, APPI Arts. 27-28): each separate consent is
    its own affirmative act. The demo's marketing goes to third parties (separate = third_party)."""
    error = _rule_error(RULES[rule_id])
    assert (error.code, error.field) == ("separate_consent_bundled", "choices.marketing")
    assert "third_party" in error.message and rule_id in error.message
    # accept_all grants everything else, the separate purpose stays for its own act...
    check_rule(validate(body(choices={**ALL, "marketing": False}), SITE, VERSIONS), SITE,
               RULES[rule_id])  # fmt: skip
    # ...which is a record of its own (custom), allowed to grant it.
    check_rule(validate(body(action="custom", choices=ALL), SITE, VERSIONS), SITE, RULES[rule_id])


def test_accept_all_still_grants_every_other_purpose() -> None:
    error = _rule_error(RULES["pipl"], choices={**ALL, "analytics": False, "marketing": False})
    assert (error.code, error.field) == ("inconsistent_action", "choices.analytics")
    # Where no separate consent is needed, accept_all grants all (GDPR lists only sensitive).
    error = _rule_error(RULES["gdpr"], choices={**ALL, "marketing": False})
    assert (error.code, error.field) == ("inconsistent_action", "choices.marketing")
    check_rule(validate(body(), SITE, VERSIONS), SITE, RULES["gdpr"])


def _p(pid: str, *modes: str, **kw: Any) -> Purpose:
    return Purpose(id=pid, name=pid, description=pid, consent_mode=modes, **kw)


GEO_SITE = Site(
    id="geo", name="geo", default_locale="en", locales=("en",), allowed_origins=(),
    purposes=(
        _p("necessary", "security_storage", essential=True),
        _p("location_ads", "ad_storage", sale_or_share=True, separate="precise_location"),
        _p("health_ads", "ad_storage", sale_or_share=True, separate="sensitive"),
    ),
)  # fmt: skip


@pytest.mark.parametrize(
    ("rule_id", "purpose", "kind"),
    [
        # Md. Com. Law 14-4607(a)(2): sensitive data is never sold, consent or not.
        ("us-md", "health_ads", "sale of sensitive"),
        ("us-md", "location_ads", "sale of sensitive"),
        # ORS 646A.578 (HB 2008) and Va. 2026 Acts ch. 820: no sale of precise geolocation.
        ("us-or", "location_ads", "sale of precise location"),
        ("us-va", "location_ads", "sale of precise location"),
    ],
)
def test_a_prohibited_sale_is_never_recorded_as_granted(
    rule_id: str, purpose: str, kind: str
) -> None:
    choices = {"location_ads": False, "health_ads": False, purpose: True}
    error = _rule_error(RULES[rule_id], GEO_SITE, action="custom", choices=choices)
    assert (error.code, error.field) == ("prohibited_purpose", f"choices.{purpose}")
    assert kind in error.message


def test_prohibited_sales_elsewhere_need_only_consent() -> None:
    """Outside MD/OR/VA (and the fail-closed US union) a sensitive sale is opt-in, not banned."""
    consent = validate(
        body(action="custom", choices={"location_ads": True, "health_ads": True}),
        GEO_SITE,
        VERSIONS,
    )
    for rule_id in ("ccpa", "us-states", "us-states-gpc-optional", "us-ct", "gdpr"):
        check_rule(consent, GEO_SITE, RULES[rule_id])
    # An accept_all leaves the banned sale and the separate sensitive one off, and is consistent.
    accept = validate(
        body(choices={"location_ads": False, "health_ads": False}), GEO_SITE, VERSIONS
    )
    check_rule(accept, GEO_SITE, RULES["us-or"])


@pytest.mark.parametrize(
    ("rule_id", "age", "banned"),
    [
        # Md. Com. Law 14-4607(a)(4)-(5): no targeted ads to, no sale of, known under-18s.
        ("us-md", 17, True),
        ("us-md", 18, False),
        # Conn. Gen. Stat. 42-529a as amended by SB 1295 (from 1 Jul 2026): the same under 18.
        ("us-ct", 17, True),
        # ORS 646A.578 (HB 2008): under 16.
        ("us-or", 15, True),
        ("us-or", 16, False),
        # Lei 15.211/2025 (ECA Digital): no profiling-based ads to children and adolescents.
        ("lgpd", 17, True),
        # CCPA 1798.120(c): under 16 is opt-in, not a ban.
        ("ccpa", 15, False),
        ("us-md", None, False),  # no age signal: not a known minor
    ],
)
def test_the_sites_age_signal_bans_what_the_law_bans_for_minors(
    rule_id: str, age: int | None, banned: bool
) -> None:
    consent = validate(body(action="custom", choices=ALL, age=age), SITE, VERSIONS)
    assert consent.age == age
    if not banned:
        check_rule(consent, SITE, RULES[rule_id])
        return
    with pytest.raises(BadRequest) as info:
        check_rule(consent, SITE, RULES[rule_id])
    assert (info.value.code, info.value.field) == ("prohibited_purpose", "choices.marketing")
    assert "for a minor" in info.value.message
    # What is not banned stays the visitor's choice.
    check_rule(validate(body(action="custom", choices={**ALL, "marketing": False}, age=age),
                        SITE, VERSIONS), SITE, RULES[rule_id])  # fmt: skip


def test_dpdp_bans_tracking_a_child_too() -> None:
    """DPDP s. 9(3) "tracking or behavioural monitoring": analytics as well as ads."""
    choices = {"analytics": True, "marketing": False, "personalization": False}
    error = _rule_error(RULES["dpdp"], action="custom", choices=choices, age=12)
    assert (error.code, error.field) == ("prohibited_purpose", "choices.analytics")
    check_rule(validate(body(action="custom", choices=choices, age=18), SITE, VERSIONS), SITE,
               RULES["dpdp"])  # fmt: skip


def test_a_gpc_record_under_the_uk_rule_is_an_objection_to_exempt_analytics() -> None:
    """PECR Sch. A1 para 5(2)(d): GPC objects; a gpc record cannot keep analytics on (W16)."""
    choices = {"analytics": True, "marketing": False, "personalization": False}
    error = _rule_error(RULES["uk"], action="gpc", choices=choices)
    assert (error.code, error.field) == ("inconsistent_action", "choices.analytics")
    check_rule(validate(body(action="gpc", choices={**choices, "analytics": False}), SITE,
                        VERSIONS), SITE, RULES["uk"])  # fmt: skip
    # Where GPC is only an opt-out of sale, the analytics choice is untouched.
    check_rule(validate(body(action="gpc", choices=choices), SITE, VERSIONS), SITE, RULES["ccpa"])


def test_an_age_signal_is_kept_with_the_record() -> None:
    consent = validate(body(age=15), SITE, VERSIONS)
    context = RecordContext(
        ip=None, region=Region("US", "MD", "header"), rule=RULES["us-md"], gpc=False,
        user_agent="", origin="", language="en", consent_revision="r",
    )  # fmt: skip
    record = enrich(consent, context, record_id="x", recorded_at="t", node_id="n")
    assert record.signals == {"age": 15}


def test_site_overrides_keep_the_bans() -> None:
    rule = TABLE.apply_override(RULES["us-md"], {"reject_on_first_layer": True})
    error = _rule_error(rule, GEO_SITE, action="custom",
                        choices={"location_ads": False, "health_ads": True})  # fmt: skip
    assert error.code == "prohibited_purpose"


def test_the_rule_plan_memo_is_bounded_and_never_serves_another_rule() -> None:
    """Threat: many reloads (new Site and Rule objects) growing the memo without bound, or a
    recycled id() handing one rule's plan to another."""
    from gateway.recording import consent as module

    consent = validate(body(action="custom", choices=ALL), SITE, VERSIONS)
    for i in range(module._MAX_PLANS + 50):
        rule = TABLE.apply_override(RULES["gdpr"], {"name": f"reload {i}"})
        check_rule(consent, SITE, rule)
        assert len(module._PLANS) <= module._MAX_PLANS
    # Same site, a rule that bans marketing for minors: never the gdpr plan.
    error = _rule_error(RULES["us-md"], action="custom", choices=ALL, age=15)
    assert error.code == "prohibited_purpose"
