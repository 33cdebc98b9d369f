"""Sans-IO core of the recording path: parse, validate and enrich a consent choice.

Status codes: ``400`` when the body is not well formed (bad JSON, wrong types, missing or
oversized fields), ``413`` when the body exceeds ``MAX_BODY_BYTES``, ``415`` for other media
types, and ``422`` when a well-formed body contradicts the site (unknown purpose or banner
version, an essential purpose refused, an action inconsistent with its choices).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

from gateway.core.errors import BadRequest
from gateway.core.model import ACTIONS, CHANNELS, ConsentRecord, Region, Rule, Site
from gateway.core.purposes import is_exempt, is_minor, prohibited_by, separate_kind
from gateway.core.record_codec import new_record
from gateway.recording.fields import (
    CONTROL_RE,
    KEY_RE,
    LANGUAGE_RE,
    MAX_ORIGIN,
    MAX_USER_AGENT,
    attempt_field,
    bounded_text,
    optional_field,
    string_field,
    truncate_ip,
)

MAX_CHOICES = 64
MAX_PAGE_URL = 2048
MAX_AGE = 130

_SUBJECT_RE = re.compile(r"[A-Za-z0-9._:@+=~-]{1,128}")
_VERSION_RE = re.compile(r"[A-Za-z0-9._:+-]{1,64}")
_PURPOSE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class ValidatedConsent(NamedTuple):
    """A consent body that passed every rule; ``choices`` lists every purpose of the site.

    Named tuples, not frozen dataclasses, for the per-request values: a frozen dataclass
    sets each field through ``object.__setattr__`` (measured ~3 µs a build, twice a request).
    """

    site: str
    subject_id: str
    banner_version: str
    action: str
    choices: Mapping[str, bool]
    channel: str
    language: str | None
    page_url: str
    idempotency_key: str | None
    withdraws: str | None
    age: int | None = None  # the site's age signal, when it knows the visitor's age
    attempt: int = 1  # the client's count of its sends of this body (never stored)


class RecordContext(NamedTuple):
    """What the server knows about the request; ``ip`` is raw here and truncated by enrich."""

    ip: str | None
    region: Region
    rule: Rule
    gpc: bool
    user_agent: str
    origin: str
    language: str
    consent_revision: str


def _page_url(body: Mapping[str, Any]) -> str:
    value = body.get("page_url")
    if value is None or value == "":
        return ""
    if (
        not isinstance(value, str)
        or len(value) > MAX_PAGE_URL
        or CONTROL_RE.search(value)
        or not value.lower().startswith(("http://", "https://"))
    ):
        raise BadRequest(
            "invalid_field",
            f"page_url must be an http(s) URL of at most {MAX_PAGE_URL} characters",
            field="page_url",
        )
    return value


def _choice_field(key: str) -> str:
    """Where an error about a choice points: the key when it is a sane purpose id."""
    return f"choices.{key}" if _PURPOSE_RE.fullmatch(key) else "choices"


def _choices(body: Mapping[str, Any], site: Site) -> dict[str, bool]:
    raw = body.get("choices")
    if raw is None:
        raise BadRequest("missing_field", "choices is required", field="choices")
    if not isinstance(raw, dict) or len(raw) > MAX_CHOICES:
        raise BadRequest(
            "invalid_field",
            f"choices must be an object of at most {MAX_CHOICES} purpose ids to booleans",
            field="choices",
        )
    choices: dict[str, bool] = {}
    for key, value in raw.items():
        if type(value) is not bool:
            raise BadRequest(
                "invalid_field", "each choice must be true or false", field=_choice_field(key)
            )
        purpose = site.purpose(key)
        if purpose is None:
            raise BadRequest(
                "unknown_purpose",
                f"site {site.id} has no purpose {key!r}",
                field=_choice_field(key),
                status_code=422,
            )
        if purpose.essential and not value:
            raise BadRequest(
                "essential_refused",
                f"{key} is essential and cannot be refused",
                field=_choice_field(key),
                status_code=422,
            )
        choices[key] = value
    for purpose in site.purposes:
        if purpose.essential:
            choices[purpose.id] = True
        elif purpose.id not in choices:
            raise BadRequest(
                "missing_choice",
                f"choices must give every optional purpose; {purpose.id} is missing",
                field=f"choices.{purpose.id}",
                status_code=422,
            )
    return choices


def _check_action(action: str, choices: Mapping[str, bool], site: Site) -> None:
    if action == "custom":
        return  # any combination is a custom choice (and optional_purposes builds a tuple)
    optional = site.optional_purposes
    if action == "accept_all":
        # What accept_all grants depends on the visitor's rule: check_rule decides.
        wrong = []
    elif action in ("reject_all", "withdraw"):
        wrong = [p.id for p in optional if choices[p.id]]
    elif action == "gpc":
        wrong = [p.id for p in optional if p.sale_or_share and choices[p.id]]
    else:
        wrong = []
    if wrong:
        raise BadRequest(
            "inconsistent_action",
            f"action {action} contradicts the choice for {wrong[0]}",
            field=f"choices.{wrong[0]}",
            status_code=422,
        )


def validate(
    body: Mapping[str, Any], site: Site, known_versions: Collection[str]
) -> ValidatedConsent:
    """Check a parsed body against the site; raise ``BadRequest`` naming the field."""
    subject_id = string_field(
        body, "subject_id", _SUBJECT_RE, "1-128 characters of A-Z a-z 0-9 . _ : @ + = ~ -"
    )
    banner_version = string_field(body, "banner_version", _VERSION_RE, "a banner version id")
    action = body.get("action")
    if action is None:
        raise BadRequest("missing_field", "action is required", field="action")
    if action not in ACTIONS:
        raise BadRequest(
            "invalid_field", f"action must be one of {', '.join(ACTIONS)}", field="action"
        )
    channel = body.get("channel", "web")
    if channel not in CHANNELS:
        raise BadRequest(
            "invalid_field", f"channel must be one of {', '.join(CHANNELS)}", field="channel"
        )
    language = optional_field(body, "language", LANGUAGE_RE, "a language tag such as de or pt-BR")
    page_url = _page_url(body)
    key = optional_field(body, "idempotency_key", KEY_RE, "1-128 printable ASCII characters")
    withdraws = optional_field(body, "withdraws", _UUID_RE, "a record id (lower-case UUID)")
    choices = _choices(body, site)
    if banner_version not in known_versions:
        raise BadRequest(
            "unknown_banner_version",
            f"banner version {banner_version} is neither current nor retained",
            field="banner_version",
            status_code=422,
        )
    _check_action(action, choices, site)
    age = body.get("age")
    if age is not None and (type(age) is not int or not 0 <= age <= MAX_AGE):
        raise BadRequest(
            "invalid_field",
            f"age must be the visitor's age in whole years, 0 to {MAX_AGE}",
            field="age",
        )
    return ValidatedConsent(
        site=site.id,
        subject_id=subject_id,
        banner_version=banner_version,
        action=action,
        choices=choices,
        channel=channel,
        language=language,
        page_url=page_url,
        idempotency_key=key,
        withdraws=withdraws,
        age=age,
        attempt=attempt_field(body),
    )


# (purpose id, why it is banned, the separate consent it needs, exempt where GPC objects)
_Plan = tuple[tuple[str, str | None, str | None, bool], ...]
# id(site), id(rule), minor → (site, rule, plan): what a rule makes of a site's purposes, worked
# out once per published site and rule rather than per record. Keys come from server state
# only (bundles and their rules), and the size is bounded anyway.
_PLANS: dict[tuple[int, int, bool], tuple[Site, Rule, _Plan]] = {}
_MAX_PLANS = 1024


def _plan(site: Site, rule: Rule, minor: bool) -> _Plan:
    key = (id(site), id(rule), minor)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is site and hit[1] is rule:
        return hit[2]
    plan = tuple(
        (
            p.id,
            prohibited_by(rule, p, minor),
            separate_kind(rule, p),
            rule.gpc_objects and is_exempt(rule, p),
        )
        for p in site.optional_purposes
    )
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[key] = (site, rule, plan)
    return plan


def check_rule(consent: ValidatedConsent, site: Site, rule: Rule) -> None:
    """Check a validated choice against the visitor's rule; raise ``BadRequest`` (422).

    A purpose the rule needs a separate consent for is never part of ``accept_all`` (PIPL
    Arts. 23, 25, 29, 39: each its own affirmative act; record it with action ``custom``), and
    ``accept_all`` grants every other optional purpose. A prohibited purpose (for everyone, or
    for a visitor the site's ``age`` signal makes a known minor) is never granted. Under a rule
    where GPC is an objection, a ``gpc`` record keeps the exempt purposes off.
    """
    choices = consent.choices
    action = consent.action
    for pid, banned, kind, objected in _plan(site, rule, is_minor(rule, consent.age)):
        chosen = choices[pid]
        if chosen and banned:
            raise BadRequest(
                "prohibited_purpose",
                f"{pid} cannot be granted under rule {rule.id}: the law bans it "
                f"({banned.replace('_', ' ').replace('minor:', 'for a minor: ')}), whatever "
                "the consent",
                field=f"choices.{pid}",
                status_code=422,
            )
        if action == "accept_all":
            if chosen and kind:
                raise BadRequest(
                    "separate_consent_bundled",
                    f"{pid} needs a separate consent ({kind}) under rule {rule.id}: it cannot "
                    "be granted by accept_all; record it with action custom after the "
                    "visitor's own act for it",
                    field=f"choices.{pid}",
                    status_code=422,
                )
            if not chosen and not kind and not banned:
                raise BadRequest(
                    "inconsistent_action",
                    f"action accept_all contradicts the choice for {pid}",
                    field=f"choices.{pid}",
                    status_code=422,
                )
        elif action == "gpc" and chosen and objected:
            raise BadRequest(
                "inconsistent_action",
                f"action gpc is an objection under rule {rule.id}: {pid} stays off",
                field=f"choices.{pid}",
                status_code=422,
            )


def enrich(
    consent: ValidatedConsent,
    context: RecordContext,
    *,
    record_id: str,
    recorded_at: str,
    node_id: str,
) -> ConsentRecord:
    """Add what only the server knows; the result is the record as stored."""
    region = context.region
    fields = {
        "record_id": record_id,
        "recorded_at": recorded_at,
        "site": consent.site,
        "subject_id": consent.subject_id,
        "banner_version": consent.banner_version,
        "consent_revision": context.consent_revision,
        "action": consent.action,
        "choices": consent.choices,
        "channel": consent.channel,
        "language": consent.language or context.language,
        "rule_id": context.rule.id,
        "region_country": region.country,
        "region_subdivision": region.subdivision,
        "region_source": region.source,
        "gpc": context.gpc,
        "ip_truncated": truncate_ip(context.ip),
        "user_agent": bounded_text(context.user_agent, MAX_USER_AGENT),
        "origin": bounded_text(context.origin, MAX_ORIGIN),
        "page_url": consent.page_url,
        "node_id": node_id,
        "idempotency_key": consent.idempotency_key,
        "withdraws": consent.withdraws,
        # The site's age signal, when given: the proof of why a minor's ban applied.
        "signals": {} if consent.age is None else {"age": consent.age},
    }
    # Every field by name (tests/test_recording.py holds enrich to that): new_record skips
    # the frozen __init__, which is on the request path; the result is the same.
    return new_record(fields)
