"""Rights rules, deadlines, workflow, credentials, export and events: the pure parts."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path

import jsonschema
import orjson
import pytest

from gateway.cli.checks import run_checks
from gateway.core.errors import ConfigError
from gateway.rights import credentials, events, kinds
from gateway.rights.deadlines import Period, add, add_business_days, add_months, parse_period
from gateway.rights.export import build_zip
from gateway.rights.policy import load_policies, parse_policies, rights_table_markdown, site_rights
from gateway.sinks.rights import StoredRequest, SystemPart
from tests.helpers import ROOT, editable_settings, shipped_rules

UTC = dt.UTC


def at(year: int, month: int, day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "months", "due"),
    [
        (at(2025, 1, 31, 9), 1, at(2025, 2, 28, 9)),  # no 31 February: the month's last day
        (at(2024, 1, 31, 9), 1, at(2024, 2, 29, 9)),  # leap year
        (at(2025, 1, 31), 3, at(2025, 4, 30)),  # one month + two (GDPR extended), from receipt
        (at(2025, 3, 31), 1, at(2025, 4, 30)),
        (at(2025, 12, 15), 1, at(2026, 1, 15)),  # across the year
        (at(2025, 11, 30), 3, at(2026, 2, 28)),
        (at(2025, 6, 10), 0, at(2025, 6, 10)),
    ],
)
def test_calendar_months_end_on_the_same_day_or_the_months_last(
    start: dt.datetime, months: int, due: dt.datetime
) -> None:
    assert add_months(start, months) == due


def test_business_days_skip_weekends() -> None:
    friday = at(2026, 12, 4, 17)
    assert add_business_days(friday, 1) == at(2026, 12, 7, 17)  # Monday
    assert add_business_days(friday, 15) == at(2026, 12, 25, 17)  # three weeks
    assert add(friday, Period(45, "days")) == at(2027, 1, 18, 17)


@pytest.mark.parametrize("text", ["", "30", "thirty days", "-1 days", "1 weeks", "12345 days"])
def test_periods_are_strict(text: str) -> None:
    with pytest.raises(ValueError, match="not a period"):
        parse_period(text)


def test_every_jurisdiction_template_has_its_rights() -> None:
    policies = load_policies()
    assert set(shipped_rules().rules) <= set(policies), "a rule template without rights"
    gdpr = policies["gdpr"]
    assert "Art. 12(3)" in gdpr.law
    assert (str(gdpr.deadline.period), str(gdpr.deadline.extension)) == ("1 month", "2 months")
    ccpa = policies["ccpa"]
    assert "1798.130(a)(2)" in ccpa.law
    assert (ccpa.deadline.period, ccpa.deadline.extension) == (
        Period(45, "days"),
        Period(45, "days"),
    )
    assert ccpa.deadline_for("opt_out_sale").period == Period(15, "business_days")
    assert "opt_out_sale" in ccpa.types and "restriction" not in ccpa.types
    assert policies["lgpd"].deadline.period == Period(15, "days")
    assert policies["quebec"].deadline == policies["quebec"].deadline_for("access")
    assert policies["quebec"].deadline.extension.is_zero
    assert set(policies["default"].types) == set(kinds.TYPES)  # unknown region: fail closed


def test_a_site_overrides_deadlines_and_declares_systems() -> None:
    rights = site_rights(
        load_policies(),
        {
            "templates": {
                "gdpr": {"deadline": "20 days"},
                "ccpa": {"access": {"deadline": "30 days"}},
            },
            "systems": [
                {"name": "crm", "secret_env": "CRM_SECRET"},
                {"name": "cdp", "secret_env": "CDP_SECRET", "required": False,
                 "remind_after": "2 business days"},
            ],
        },
    )  # fmt: skip
    assert rights.policy("gdpr").deadline.period == Period(20, "days")
    assert rights.policy("gdpr").deadline.extension == Period(2, "months")  # kept
    assert rights.policy("gdpr+1a2b3c4d").deadline.period == Period(20, "days")  # derived rule
    assert rights.policy("ccpa").deadline_for("access").period == Period(30, "days")
    assert rights.policy("no-such-rule").template == "default"
    cdp = rights.system("cdp")
    assert cdp is not None and not cdp.required and cdp.remind_after == Period(2, "business_days")
    assert rights.system("crm") is not None and rights.system("crm").required  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"templatez": {}}, "unknown key"),
        ({"templates": {"gdpr": {"deadline": "soon"}}}, "not a period"),
        ({"templates": {"gdpr": {"types": ["access", "teleport"]}}}, "request types"),
        ({"systems": [{"name": "CRM!", "secret_env": "X"}]}, "name"),
        ({"systems": [{"name": "crm", "secret_env": "GATEWAY_ADMIN_TOKEN"}]}, "secret_env"),
        ({"systems": [{"name": "crm", "secret_env": "A"}, {"name": "crm", "secret_env": "B"}]},
         "duplicate"),
        ({"systems": [{"name": "crm", "secret_env": "A", "required": "yes"}]}, "required"),
    ],
)  # fmt: skip
def test_invalid_site_rights_name_the_problem(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        site_rights(load_policies(), table)


def test_the_rights_table_needs_a_fail_closed_default() -> None:
    with pytest.raises(ConfigError, match="default"):
        parse_policies({"templates": {"gdpr": {"types": [], "deadline": "1 months",
                                               "extension": "0 days"}}})  # fmt: skip


def test_workflow_transitions() -> None:
    kinds.check_transition("received", "verifying", "")
    kinds.check_transition("in_progress", "extended", "complex request")
    kinds.check_transition("extended", "completed", "")
    for current, target in [
        ("completed", "denied"),
        ("denied", "in_progress"),
        ("extended", "extended"),  # one extension only
        ("verifying", "completed"),  # never completed unverified
        ("verifying", "extended"),
    ]:
        with pytest.raises(kinds.TransitionError) as caught:
            kinds.check_transition(current, target, "why")
        assert caught.value.code == "invalid_transition"
    with pytest.raises(kinds.TransitionError) as caught:
        kinds.check_transition("in_progress", "denied", "  ")
    assert caught.value.code == "reason_required"


def test_codes_tokens_and_links() -> None:
    key = b"k" * 32
    code = credentials.new_code()
    assert len(code) == credentials.CODE_DIGITS and code.isdigit()
    stored = credentials.code_hash(key, "req-1", code)
    assert code not in stored
    assert credentials.code_matches(key, "req-1", code, stored)
    assert not credentials.code_matches(key, "req-2", code, stored)  # bound to its request
    for wrong in ("", "0" * 7, code + "0", "abcdefgh", code[:-1] + "x", "\uff11" * 8, code + "\n"):
        assert not credentials.code_matches(key, "req-1", wrong, stored)
    token, token_hash = credentials.new_token()
    assert credentials.token_matches(token, token_hash)
    assert not credentials.token_matches(token[:-1] + "A", token_hash) or token.endswith("A")
    assert not credentials.token_matches("", token_hash)
    sig = credentials.sign_download(key, "req-1", 2000)
    assert credentials.download_ok(key, "req-1", "2000", sig, now=1999)
    assert not credentials.download_ok(key, "req-1", "2000", sig, now=2000)  # expired
    assert not credentials.download_ok(key, "req-2", "2000", sig, now=1)  # another request
    assert not credentials.download_ok(key, "req-1", "2001", sig, now=1)  # moved expiry
    assert not credentials.download_ok(key, "req-1", "-1", sig, now=1)


def _request(**changes: object) -> StoredRequest:
    base = StoredRequest(
        request_id="5b0c4a57-6f5e-4e8e-9d27-9e0b8f1c2d3e", site="demo", type="access",
        state="in_progress", rule_id="gdpr", region={"country": "DE", "subdivision": None},
        verification="email", subject_ids=("sub-1",), identity_type="email",
        identity_hash="ab" * 32, token_hash="0" * 64, code_hash=None, code_expires_at=None,
        code_attempts=0, details={}, language="de", received_at="2026-01-31T10:00:00.000000Z",
        due_at="2026-02-28T10:00:00.000000Z", updated_at="2026-01-31T10:00:00.000000Z",
    )  # fmt: skip
    return StoredRequest(**{**base.__dict__, **changes})


def test_events_follow_the_documented_schema() -> None:
    parts = [SystemPart("r", "crm", True, "pending")]
    for type_, change in [(events.CREATED, ""), (events.UPDATED, "reminder"),
                          (events.COMPLETED, "")]:  # fmt: skip
        name, body = events.event(type_, "2026-01-31T10:00:00.000000Z", _request(), parts,
                                  change=change, system="crm" if change else "")  # fmt: skip
        assert name == type_
        jsonschema.validate(body, events.EVENT_SCHEMA)
        assert body["request"]["identity"] == {"type": "email", "hash": "ab" * 32}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"id": "x", "type": "consent.recorded", "time": "t", "request": {}},
                            events.EVENT_SCHEMA)  # fmt: skip


def test_the_export_is_a_zip_of_json_and_csv_without_formulas() -> None:
    record = {
        "record_id": "r1", "recorded_at": "2026-01-01T00:00:00.000000Z", "subject_id": "s",
        "banner_version": "v1", "consent_revision": "c1", "action": "custom",
        "choices": {"analytics": True, "marketing": False}, "channel": "web", "language": "en",
        "rule_id": "gdpr", "region_country": "DE", "region_subdivision": None, "gpc": False,
        "ip_truncated": "203.0.113.0", "user_agent": "=HYPERLINK(\"http://evil\")",
        "origin": "https://shop.example", "page_url": "https://shop.example/", "withdraws": None,
    }  # fmt: skip
    data = {
        "request": {"request_id": "q"},
        "subjects": [{"subject_id": "s", "records": [record], "current": record,
                      "preferences": {"": {"channels": {"email": True}}},
                      "identities": ["email"]}],
        "texts": {"v1": {"en": {"texts": {"opt-in": {"title": "We value your privacy"}}}}},
    }  # fmt: skip
    archive = zipfile.ZipFile(io.BytesIO(build_zip(data)))
    assert sorted(archive.namelist()) == [
        "consents.csv", "identities.csv", "preferences.csv", "records.csv", "subject.json",
        "texts.csv",
    ]  # fmt: skip
    records = archive.read("records.csv").decode()
    assert "'=HYPERLINK" in records  # CSV injection defused
    assert "analytics,True,r1" in archive.read("consents.csv").decode()
    assert "We value your privacy" in archive.read("texts.csv").decode()
    assert "channels.email,True" in archive.read("preferences.csv").decode()
    assert build_zip(data) == build_zip(data)  # no timestamps inside


def test_the_readme_deadline_table_is_the_rights_table() -> None:
    """The compliance officer's guide shows the shipped table (after editing rights.toml,
    paste ``rights_table_markdown(load_policies())`` into the README)."""
    readme = (ROOT / "README.md").read_text("utf-8")
    assert rights_table_markdown(load_policies()) in readme


def test_check_reports_site_rights_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRM_RIGHTS_SECRET", raising=False)
    settings = editable_settings(tmp_path)
    site_file = settings.banners_dir / "demo" / "site.toml"
    original = site_file.read_text()
    site_file.write_text(
        original
        + '\n[rights]\n[[rights.systems]]\nname = "crm"\nsecret_env = "CRM_RIGHTS_SECRET"\n'
    )
    report = run_checks(settings)
    assert not report.errors
    warned = [w.message for w in report.warnings]
    assert "downstream system 'crm': CRM_RIGHTS_SECRET is not set" in warned
    assert any("e-mail verification of rights requests is off" in m for m in warned)
    site_file.write_text(original + '\n[rights.templates.gdpr]\ndeadline = "soon"\n')
    report = run_checks(settings)
    assert any("not a period" in e.message for e in report.errors)


def test_the_published_event_schema_is_the_one_the_gateway_follows() -> None:
    published = orjson.loads((ROOT / "docs" / "rights-request-event.schema.json").read_bytes())
    assert published == events.EVENT_SCHEMA
    jsonschema.Draft202012Validator.check_schema(published)
