"""The domain's plain values: sites, purposes, rules, regions, resolved banners, consent records."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.core.iab import GppSettings, TcfSettings
from gateway.core.periods import shortest_days
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

# Kinds of processing that some laws (PIPL, PIPA) require a consent of its own for. Precise
# geolocation is sensitive data wherever a law names it: a rule that lists "sensitive" covers it.
SEPARATE_CONSENT_KINDS: tuple[str, ...] = (
    "sensitive",
    "third_party",
    "cross_border",
    "public_disclosure",
    "precise_location",
)

# Processing a law bans outright, whatever the consent (Rule.prohibited): a sale/share purpose
# whose data is sensitive (Md. Com. Law 14-4607(a)(2)), or precise geolocation (ORS 646A.578,
# Va. 2026 Acts ch. 820).
PROHIBITED_KINDS: tuple[str, ...] = ("sale_of_sensitive", "sale_of_precise_location")

# Processing a law bans for a known minor (Rule.minor_prohibited, under Rule.minor_age): sale
# (sale_or_share purposes), targeted ads (purposes mapping ad_personalization), tracking
# (purposes mapping analytics, ad or personalisation storage; DPDP s. 9(3)).
MINOR_PROHIBITED_KINDS: tuple[str, ...] = ("sale", "targeted_ads", "tracking")

# The UK exceptions a purpose may claim (PECR Sch. A1), as exemption categories: analytics
# (para 5, statistical purposes), functionality (para 6, appearance), security (para 4).
EXEMPTION_CATEGORIES: tuple[str, ...] = ("analytics", "functionality", "security")


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
    # Purposes exempt from consent under this rule (e.g. UK 2026 analytics exemption): they run
    # before a choice with information and a simple means of objecting (objection-based).
    exempt_purposes: tuple[str, ...] = ()
    # Re-ask after this many calendar months (TCF: remind at least every 13 months), and after a
    # refusal. Asking again never undoes a refusal: it stays until the visitor changes it.
    reprompt_months: int = 13
    reprompt_after_refusal_months: int = 6
    # PROHIBITED_KINDS banned outright: such a purpose is never on and never offered.
    prohibited: tuple[str, ...] = ()
    # MINOR_PROHIBITED_KINDS banned for a visitor the site signals to be under ``minor_age``.
    minor_age: int = 0
    minor_prohibited: tuple[str, ...] = ()
    # Consent Mode types that need an opt-in even under an opt-out model: a purpose mapping one
    # is off before a choice (e.g. ad types in CH).
    opt_in_types: tuple[str, ...] = ()
    # GPC counts as an objection to the exempt (objection-based) purposes.
    gpc_objects: bool = False
    # Languages (ISO 639) a visitor must be able to read the notice in, at their option (DPDP
    # s. 5(3): English or an Eighth Schedule language); `consent-gateway check` warns when a
    # site offers none of them besides English.
    notice_languages: tuple[str, ...] = ()
    # Country → the national age of consent that replaces ``age_of_consent`` there (GDPR Art. 8).
    national_ages: Mapping[str, int] = field(default_factory=dict)
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
            "objection_based": bool(self.exempt_purposes),
            "gpc_objects": self.gpc_objects,
            "reprompt_months": self.reprompt_months,
            "reprompt_after_refusal_months": self.reprompt_after_refusal_months,
            # For clients that count days: the shortest the periods last, so never longer.
            "reprompt_days": shortest_days(self.reprompt_months),
            "reprompt_after_refusal_days": shortest_days(self.reprompt_after_refusal_months),
            "prohibited": list(self.prohibited),
            "minor_age": self.minor_age or None,
            "minor_prohibited": list(self.minor_prohibited),
            "opt_in_types": list(self.opt_in_types),
        }

    def age_for(self, country: str | None) -> int | None:
        """The age of consent in a country: its national figure, else the rule's own."""
        if country and self.national_ages:
            return self.national_ages.get(country, self.age_of_consent)
        return self.age_of_consent


@dataclass(frozen=True)
class Exemption:
    """What a site declares about a purpose to claim a UK exception (PECR Sch. A1).

    ``consent-gateway check`` names each fact a kind needs that is not declared; until all are,
    the purpose is not exempt and needs consent like any other.
    """

    category: str  # an EXEMPTION_CATEGORIES entry
    improves_service_only: bool = False  # para 5: statistics to improve the service, nothing else
    shared_only_to_improve: bool = False  # para 5: no onward sharing except to help improve it
    provider_is_processor: bool = False  # ICO: the provider is a processor, not a joint controller


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
    exemption: Exemption | None = None  # the facts claimed for a UK exception, if any
    wechat_apis: tuple[str, ...] = ()  # WeChat privacy APIs this purpose uses (wx.getLocation, …)


@dataclass(frozen=True)
class WeChatSettings:
    """What a WeChat mini-program needs besides the config: its declared privacy contract."""

    privacy_contract_name: str = ""  # the 《…隐私保护指引》 name, as wx.getPrivacySetting gives it
    agree_button_id: str = ""  # id of the <button open-type="agreePrivacyAuthorization">


@dataclass(frozen=True)
class CookieSettings:
    name: str = "cg_consent"
    domain: str = ""
    # 13 calendar months are 393 to 397 days: 393 never outlives them (CNIL: 13 months at most).
    max_age_days: int = 393
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
    # WeChat mini-program settings, served in the config when set.
    wechat: WeChatSettings | None = None
    # The [rights] table as written (validated by gateway/rights/policy.py): rights templates
    # overridden for this site and its downstream systems.
    rights: Mapping[str, Any] = field(default_factory=dict)
    # [tcf] and [gpp]: IAB TCF v2.3 and GPP strings for the regions they apply to (None: off).
    tcf: TcfSettings | None = None
    gpp: GppSettings | None = None

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
    minor: bool = False  # the site signalled a minor and this rule bans something for minors


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
            and data.keys() == RECORD_FIELDS
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


# A record's fields, in order: computed here once; the record codec
# (core/record_codec.py), the outbox, the forwarder and the sinks all take them from here.
RECORD_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ConsentRecord))
RECORD_FIELDS = frozenset(RECORD_COLUMNS)
