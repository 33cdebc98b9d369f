"""The domain's plain values: sites, purposes, rules, regions, resolved banners, consent records."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.core.preference_model import PreferenceModel

ConsentModel = Literal["opt-in", "opt-out", "notice"]
RegionSource = Literal["header", "geoip", "query", "unknown"]
Action = Literal["accept_all", "reject_all", "custom", "withdraw", "gpc"]
Channel = Literal["web", "app", "miniprogram", "email", "store", "api"]

ACTIONS: tuple[str, ...] = ("accept_all", "reject_all", "custom", "withdraw", "gpc")
CHANNELS: tuple[str, ...] = ("web", "app", "miniprogram", "email", "store", "api")

# Google Consent Mode v2 storage types.
CONSENT_MODE_TYPES: tuple[str, ...] = (
    "ad_storage",
    "ad_user_data",
    "ad_personalization",
    "analytics_storage",
    "functionality_storage",
    "personalization_storage",
    "security_storage",
)

# Kinds of processing that some laws (PIPL, PIPA) require a consent of its own for.
SEPARATE_CONSENT_KINDS: tuple[str, ...] = (
    "sensitive",
    "third_party",
    "cross_border",
    "public_disclosure",
)


@dataclass(frozen=True)
class Region:
    """Where a visitor is, and how we know. ``country`` is ISO 3166-1 alpha-2, upper case."""

    country: str | None = None
    subdivision: str | None = None  # ISO 3166-2 suffix only, e.g. "CA" for US-CA
    source: RegionSource = "unknown"

    @property
    def code(self) -> str | None:
        """``US-CA``, ``DE``, or None when unknown."""
        if not self.country:
            return None
        return f"{self.country}-{self.subdivision}" if self.subdivision else self.country

    def as_json(self) -> dict[str, Any]:
        return {"country": self.country, "subdivision": self.subdivision, "source": self.source}


UNKNOWN_REGION = Region()


@dataclass(frozen=True)
class Rule:
    """A jurisdiction's consent rules, as a template the gateway ships or a site overrides."""

    id: str
    model: ConsentModel
    name: str = ""
    # State of non-essential purposes before any choice: False = off until consent (opt-in).
    default_granted: bool = False
    # Honour Global Privacy Control as an opt-out of sale/sharing/targeted ads.
    gpc: bool = False
    reject_on_first_layer: bool = True
    do_not_sell_link: bool = False
    limit_sensitive_link: bool = False
    # Separate-consent kinds (see SEPARATE_CONSENT_KINDS) that must each be asked on their own.
    separate_consent: tuple[str, ...] = ()
    # Google Consent Mode v2 defaults before any choice.
    consent_mode: Mapping[str, str] = field(default_factory=dict)
    age_of_consent: int | None = None
    # Purposes exempt from consent under this rule (e.g. UK 2026 analytics exemption): inform only.
    exempt_purposes: tuple[str, ...] = ()
    # Re-ask after this many days (TCF: 13 months), and after a refusal.
    reprompt_days: int = 395
    reprompt_after_refusal_days: int = 180
    # The exemption categories among exempt_purposes → the Consent Mode types each covers,
    # filled in by the rule table so that deciding an exemption needs only the rule.
    exempt_categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "name": self.name,
            "default_granted": self.default_granted,
            "gpc": self.gpc,
            "reject_on_first_layer": self.reject_on_first_layer,
            "do_not_sell_link": self.do_not_sell_link,
            "limit_sensitive_link": self.limit_sensitive_link,
            "separate_consent": list(self.separate_consent),
            "age_of_consent": self.age_of_consent,
            "exempt_purposes": list(self.exempt_purposes),
            "reprompt_days": self.reprompt_days,
            "reprompt_after_refusal_days": self.reprompt_after_refusal_days,
        }


@dataclass(frozen=True)
class Purpose:
    """One thing a visitor can consent to. Names and descriptions are gettext msgids."""

    id: str
    name: str
    description: str
    essential: bool = False
    legal_basis: str = "consent"
    retention: str = ""
    recipients: tuple[str, ...] = ()
    cookies: tuple[str, ...] = ()  # cookie names to delete on withdrawal (prefix match with *)
    consent_mode: tuple[str, ...] = ()  # Consent Mode types this purpose grants
    separate: str | None = None  # a SEPARATE_CONSENT_KINDS entry, if it needs its own consent
    sale_or_share: bool = False  # covered by a "Do Not Sell or Share" opt-out and by GPC
    product_lines: tuple[str, ...] = ()  # the product lines it applies to; empty: all


@dataclass(frozen=True)
class CookieSettings:
    name: str = "cg_consent"
    domain: str = ""
    max_age_days: int = 395
    reload_on_withdraw: bool = True


@dataclass(frozen=True)
class Site:
    """A site as loaded from ``banners/<site>/site.toml``; all copy stays gettext msgids."""

    id: str
    name: str
    default_locale: str
    locales: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    purposes: tuple[Purpose, ...]
    controller: str = ""
    contact: str = ""
    privacy_policy_url: str = ""
    cookie: CookieSettings = field(default_factory=CookieSettings)
    # Region code (e.g. "US-CA", "DE") → a rule id, or a mapping of Rule fields to override.
    rule_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Overrides of built-in text msgids, by text key.
    texts: Mapping[str, str] = field(default_factory=dict)
    theme: Mapping[str, str] = field(default_factory=dict)
    # Banner versions retained besides the current one, accepted on POST.
    retained_versions: tuple[str, ...] = ()
    # Contact channels, topics, frequencies, product lines, identity types (preferences).
    preferences: PreferenceModel = field(default_factory=PreferenceModel)
    # The [rights] table as written (validated by gateway/rights/policy.py): rights templates
    # overridden for this site and its downstream systems.
    rights: Mapping[str, Any] = field(default_factory=dict)

    def purpose(self, purpose_id: str) -> Purpose | None:
        return self._purposes_by_id.get(purpose_id)

    @functools.cached_property
    def _purposes_by_id(self) -> dict[str, Purpose]:
        # Every recorded choice looks its purposes up; the first of a repeated id wins.
        by_id: dict[str, Purpose] = {}
        for p in self.purposes:
            by_id.setdefault(p.id, p)
        return by_id

    @property
    def optional_purposes(self) -> tuple[Purpose, ...]:
        return tuple(p for p in self.purposes if not p.essential)


@dataclass(frozen=True)
class ResolvedBanner:
    """One cache entry: everything served for a (site, version, rule, locale)."""

    site_id: str
    banner_version: str
    consent_revision: str
    rule: Rule
    locale: str
    config: Mapping[str, Any]  # the JSON config, without per-request fields
    html: str  # the banner as an HTML fragment
    texts: Mapping[str, str]
    fallbacks: tuple[str, ...] = ()  # text keys that fell back to the default language
    preferences_html: str = ""  # the preferences panel, built lazily by the snippet
    gpc_applied: bool = False  # GPC was signalled and this rule honours it


@dataclass(frozen=True)
class ConsentRecord:
    """A validated, server-enriched consent choice: legal proof, as stored."""

    record_id: str
    recorded_at: str  # RFC 3339 UTC, microseconds
    site: str
    subject_id: str
    banner_version: str
    consent_revision: str
    action: str
    choices: Mapping[str, bool]
    channel: str
    language: str
    rule_id: str
    region_country: str | None
    region_subdivision: str | None
    region_source: str
    gpc: bool
    ip_truncated: str | None
    user_agent: str
    origin: str
    page_url: str
    node_id: str
    idempotency_key: str | None = None
    withdraws: str | None = None  # record_id of the consent this withdraws, if given
    signals: Mapping[str, Any] = field(default_factory=dict)  # consent mode, TC/GPP strings

    def as_json(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "recorded_at": self.recorded_at,
            "site": self.site,
            "subject_id": self.subject_id,
            "banner_version": self.banner_version,
            "consent_revision": self.consent_revision,
            "action": self.action,
            "choices": dict(self.choices),
            "channel": self.channel,
            "language": self.language,
            "rule_id": self.rule_id,
            "region_country": self.region_country,
            "region_subdivision": self.region_subdivision,
            "region_source": self.region_source,
            "gpc": self.gpc,
            "ip_truncated": self.ip_truncated,
            "user_agent": self.user_agent,
            "origin": self.origin,
            "page_url": self.page_url,
            "node_id": self.node_id,
            "idempotency_key": self.idempotency_key,
            "withdraws": self.withdraws,
            "signals": dict(self.signals),
        }

    def plain_json(self) -> Mapping[str, Any]:
        """``as_json()``'s keys and values, read-only: the instance's own dict when it holds
        exactly those (its mappings plain dicts, as the request path builds them), so the
        hot path need not build a second 23-key dict per record. Never modify the result."""
        data = self.__dict__
        if (
            type(self.choices) is dict
            and type(self.signals) is dict
            and data.keys() == _RECORD_FIELDS
        ):
            return data
        return self.as_json()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConsentRecord:
        return cls(
            record_id=data["record_id"],
            recorded_at=data["recorded_at"],
            site=data["site"],
            subject_id=data["subject_id"],
            banner_version=data["banner_version"],
            consent_revision=data["consent_revision"],
            action=data["action"],
            choices=dict(data["choices"]),
            channel=data["channel"],
            language=data["language"],
            rule_id=data["rule_id"],
            region_country=data.get("region_country"),
            region_subdivision=data.get("region_subdivision"),
            region_source=data["region_source"],
            gpc=bool(data["gpc"]),
            ip_truncated=data.get("ip_truncated"),
            user_agent=data.get("user_agent", ""),
            origin=data.get("origin", ""),
            page_url=data.get("page_url", ""),
            node_id=data["node_id"],
            idempotency_key=data.get("idempotency_key"),
            withdraws=data.get("withdraws"),
            signals=dict(data.get("signals") or {}),
        )


_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(ConsentRecord))
