"""Parse and validate ``banners/<site>/site.toml`` into a ``model.Site``, naming file and key."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.core.errors import ConfigError
from gateway.core.model import (
    CONSENT_MODE_TYPES,
    EXEMPTION_CATEGORIES,
    SEPARATE_CONSENT_KINDS,
    CookieSettings,
    Exemption,
    Purpose,
    Site,
    WeChatSettings,
)
from gateway.core.preference_model import (
    BUILTIN_IDENTITY_TYPES,
    ContactChannel,
    Frequency,
    PreferenceModel,
    ProductLine,
    Topic,
)
from gateway.sites.iab_sitefile import parse_gpp, parse_tcf

SITE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
PURPOSE_ID = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
LOCALE_ID = re.compile(r"^[a-z]{2,3}(_[A-Z][a-z]{3})?(_([A-Z]{2}|[0-9]{3}))?$")
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
COOKIE_NAME = re.compile(r"^[A-Za-z0-9_.-]+\*?$")
LEGAL_BASES = ("consent", "legitimate_interest", "contract", "legal_obligation")

SITE_KEYS = {
    "name",
    "default_locale",
    "locales",
    "allowed_origins",
    "controller",
    "contact",
    "privacy_policy_url",
    "cookie",
    "purposes",
    "rules",
    "texts",
    "theme",
    "retained_versions",
    "channels",
    "frequencies",
    "rights",
    "topics",
    "product_lines",
    "identity_types",
    "wechat",
    "tcf",
    "gpp",
}
PURPOSE_KEYS = {
    "id",
    "name",
    "description",
    "essential",
    "legal_basis",
    "retention",
    "recipients",
    "cookies",
    "consent_mode",
    "separate",
    "sale_or_share",
    "product_lines",
    "exemption",
    "wechat_apis",
}
COOKIE_KEYS = {"name", "domain", "max_age_days", "reload_on_withdraw"}
CHANNEL_KEYS = {"id", "name", "description"}
FREQUENCY_KEYS = {"id", "name"}
TOPIC_KEYS = {
    "id",
    "name",
    "description",
    "channels",
    "frequencies",
    "default_frequency",
    "product_lines",
}
PRODUCT_LINE_KEYS = {"id", "name", "description"}
EXEMPTION_KEYS = {
    "category",
    "improves_service_only",
    "shared_only_to_improve",
    "provider_is_processor",
}
WECHAT_KEYS = {"privacy_contract_name", "agree_button_id"}
WECHAT_API = re.compile(r"^wx\.[A-Za-z][A-Za-z0-9]{0,63}$")
BUTTON_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
# 13 calendar months last 393 to 397 days: a cookie of at most 393 days never outlives them.
MAX_COOKIE_DAYS = 393


class _Reader:
    """Typed access to one TOML table that reports errors as ``file: key``."""

    def __init__(self, path: Path, table: Mapping[str, Any], prefix: str = "") -> None:
        self.path = path
        self.table = table
        self.prefix = prefix

    def fail(self, key: str, message: str, hint: str = "") -> ConfigError:
        return ConfigError(message, where=f"{self.path}: {self.prefix}{key}", hint=hint)

    def check_keys(self, allowed: set[str]) -> None:
        for key in self.table:
            if key not in allowed:
                raise self.fail(key, "unknown key", f"allowed keys: {', '.join(sorted(allowed))}")

    def get(self, key: str, kind: type, default: Any = None, *, required: bool = False) -> Any:
        if key not in self.table:
            if required:
                raise self.fail(key, "missing", f"add `{key} = …`")
            return default
        value = self.table[key]
        if kind is int and isinstance(value, bool):
            raise self.fail(key, "expected a whole number")
        if not isinstance(value, kind):
            raise self.fail(key, f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    def strings(self, key: str, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
        items = self.get(key, list, [])
        for item in items:
            if not isinstance(item, str) or (pattern is not None and not pattern.match(item)):
                raise self.fail(key, f"invalid entry {item!r}")
        return tuple(items)


def _entries(r: _Reader, key: str, allowed: set[str]) -> list[_Reader]:
    """One reader per table of an array of tables, each id checked and unique."""
    readers = []
    seen: set[str] = set()
    for index, table in enumerate(r.get(key, list, [])):
        if not isinstance(table, dict):
            raise r.fail(f"{key}[{index}]", "expected a table")
        entry = _Reader(r.path, table, f"{key}[{index}].")
        entry.check_keys(allowed)
        ident = entry.get("id", str, required=True)
        if not PURPOSE_ID.match(ident):
            raise entry.fail("id", f"invalid id {ident!r}", "lower case letters, digits and _")
        if ident in seen:
            raise entry.fail("id", f"duplicate id {ident!r}")
        seen.add(ident)
        readers.append(entry)
    return readers


def _known(r: _Reader, key: str, known: set[str], what: str) -> tuple[str, ...]:
    values = r.strings(key)
    for value in values:
        if value not in known:
            raise r.fail(
                key, f"unknown {what} {value!r}", f"declared: {', '.join(sorted(known)) or 'none'}"
            )
    return values


def _preferences(r: _Reader) -> PreferenceModel:
    """Channels, frequencies, product lines and topics, cross-checked against each other."""
    channels = tuple(
        ContactChannel(
            e.get("id", str), e.get("name", str, required=True), e.get("description", str, "")
        )
        for e in _entries(r, "channels", CHANNEL_KEYS)
    )
    frequencies = tuple(
        Frequency(e.get("id", str), e.get("name", str, required=True))
        for e in _entries(r, "frequencies", FREQUENCY_KEYS)
    )
    lines = tuple(
        ProductLine(
            e.get("id", str), e.get("name", str, required=True), e.get("description", str, "")
        )
        for e in _entries(r, "product_lines", PRODUCT_LINE_KEYS)
    )
    topics = []
    for e in _entries(r, "topics", TOPIC_KEYS):
        topic_channels = _known(e, "channels", {c.id for c in channels}, "channel")
        if not topic_channels:
            raise e.fail(
                "channels", "a topic needs at least one channel", 'e.g. channels = ["email"]'
            )
        offered = _known(e, "frequencies", {f.id for f in frequencies}, "frequency")
        default = e.get("default_frequency", str, offered[0] if offered else None)
        if default is not None and default not in offered:
            raise e.fail(
                "default_frequency",
                f"{default!r} is not one of the topic's frequencies",
                ", ".join(offered) or "the topic offers none",
            )
        topics.append(Topic(
            id=e.get("id", str), name=e.get("name", str, required=True),
            description=e.get("description", str, required=True), channels=topic_channels,
            frequencies=offered, default_frequency=default,
            product_lines=_known(e, "product_lines", {p.id for p in lines}, "product line"),
        ))  # fmt: skip
    identity_types = r.strings("identity_types", PURPOSE_ID)
    for name in identity_types:
        if name in BUILTIN_IDENTITY_TYPES:
            raise r.fail(
                "identity_types",
                f"{name!r} is built in",
                f"built-in types: {', '.join(BUILTIN_IDENTITY_TYPES)}",
            )
    return PreferenceModel(channels, frequencies, tuple(topics), lines, identity_types)


def _exemption(path: Path, index: int, table: Mapping[str, Any] | None) -> Exemption | None:
    """``[purposes.exemption]``: the facts a site declares to claim a UK exception."""
    if table is None:
        return None
    e = _Reader(path, table, f"purposes[{index}].exemption.")
    e.check_keys(EXEMPTION_KEYS)
    category = e.get("category", str, required=True)
    if category not in EXEMPTION_CATEGORIES:
        raise e.fail("category", f"unknown exemption {category!r}", ", ".join(EXEMPTION_CATEGORIES))
    return Exemption(
        category=category,
        improves_service_only=e.get("improves_service_only", bool, False),
        shared_only_to_improve=e.get("shared_only_to_improve", bool, False),
        provider_is_processor=e.get("provider_is_processor", bool, False),
    )


def _wechat(path: Path, table: Mapping[str, Any] | None) -> WeChatSettings | None:
    """``[wechat]``: the mini-program's declared privacy contract and agree button."""
    if table is None:
        return None
    w = _Reader(path, table, "wechat.")
    w.check_keys(WECHAT_KEYS)
    button = w.get("agree_button_id", str, "")
    if button and not BUTTON_ID.match(button):
        raise w.fail("agree_button_id", f"invalid id {button!r}", "letters, digits, _ and -")
    return WeChatSettings(
        privacy_contract_name=w.get("privacy_contract_name", str, ""), agree_button_id=button
    )


def _purpose(path: Path, index: int, table: Any, lines: set[str]) -> Purpose:
    if not isinstance(table, dict):
        raise ConfigError("expected a table", where=f"{path}: purposes[{index}]")
    r = _Reader(path, table, f"purposes[{index}].")
    r.check_keys(PURPOSE_KEYS)
    pid = r.get("id", str, required=True)
    if not PURPOSE_ID.match(pid):
        raise r.fail("id", f"invalid purpose id {pid!r}", "lower case letters, digits and _")
    legal_basis = r.get("legal_basis", str, "consent")
    if legal_basis not in LEGAL_BASES:
        raise r.fail("legal_basis", f"unknown legal basis {legal_basis!r}", ", ".join(LEGAL_BASES))
    modes = r.strings("consent_mode")
    for mode in modes:
        if mode not in CONSENT_MODE_TYPES:
            raise r.fail(
                "consent_mode", f"unknown Consent Mode type {mode!r}", ", ".join(CONSENT_MODE_TYPES)
            )
    separate = r.get("separate", str)
    if separate is not None and separate not in SEPARATE_CONSENT_KINDS:
        raise r.fail(
            "separate",
            f"unknown separate-consent kind {separate!r}",
            ", ".join(SEPARATE_CONSENT_KINDS),
        )
    essential = r.get("essential", bool, False)
    if essential and (separate or r.get("sale_or_share", bool, False)):
        raise r.fail(
            "essential",
            "an essential purpose cannot need separate consent or be sold",
            "split it into an essential and an optional purpose",
        )
    exemption = _exemption(path, index, r.get("exemption", dict))
    if exemption is not None and (separate or r.get("sale_or_share", bool, False)):
        raise r.fail(
            "exemption",
            "a purpose that is sold or shared, or needs a separate consent, cannot run on an "
            "exemption",
            "PECR Sch. A1 and the ICO allow no onward sharing and no advertising",
        )
    return Purpose(
        id=pid,
        name=r.get("name", str, required=True),
        description=r.get("description", str, required=True),
        essential=essential,
        legal_basis=legal_basis,
        retention=r.get("retention", str, ""),
        recipients=r.strings("recipients"),
        cookies=r.strings("cookies", COOKIE_NAME),
        consent_mode=modes,
        separate=separate,
        sale_or_share=r.get("sale_or_share", bool, False),
        product_lines=_known(r, "product_lines", lines, "product line"),
        exemption=exemption,
        wechat_apis=r.strings("wechat_apis", WECHAT_API),
    )


def parse_site(site_id: str, path: Path, data: Mapping[str, Any]) -> Site:
    """Validate a parsed site.toml; raises ConfigError naming the file, key and a hint."""
    if not SITE_ID.match(site_id):
        raise ConfigError(
            f"invalid site id {site_id!r}",
            where=str(path.parent),
            hint="folder names are lower case letters, digits, - and _",
        )
    r = _Reader(path, data)
    r.check_keys(SITE_KEYS)
    locales = r.strings("locales", LOCALE_ID)
    default_locale = r.get("default_locale", str, required=True)
    if not LOCALE_ID.match(default_locale):
        raise r.fail(
            "default_locale",
            f"invalid locale {default_locale!r}",
            "use Babel identifiers such as en, pt_BR, zh_Hans",
        )
    if default_locale not in locales:
        locales = (default_locale, *locales)
    purposes_raw = r.get("purposes", list, required=True)
    preferences = _preferences(r)
    lines = {p.id for p in preferences.product_lines}
    purposes = tuple(_purpose(path, i, p, lines) for i, p in enumerate(purposes_raw))
    ids = [p.id for p in purposes]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise r.fail("purposes", f"duplicate purpose id {dupes[0]!r}")
    if not any(p.essential for p in purposes):
        raise r.fail(
            "purposes",
            "no essential purpose",
            "mark the strictly necessary one "
            "`essential = true`: it stores the consent choice itself",
        )
    cookie_table = r.get("cookie", dict, {})
    c = _Reader(path, cookie_table, "cookie.")
    c.check_keys(COOKIE_KEYS)
    max_age = c.get("max_age_days", int, MAX_COOKIE_DAYS)
    if not 1 <= max_age <= MAX_COOKIE_DAYS:
        raise c.fail(
            "max_age_days",
            f"must be between 1 and {MAX_COOKIE_DAYS} days",
            "a consent cookie lives 13 months at most (CNIL); 13 calendar months can be as "
            "short as 393 days",
        )
    cookie_name = c.get("name", str, "cg_consent")
    if not COOKIE_NAME.match(cookie_name) or cookie_name.endswith("*"):
        raise c.fail("name", f"invalid cookie name {cookie_name!r}")
    texts = r.get("texts", dict, {})
    for key, value in texts.items():
        if not isinstance(value, str):
            raise r.fail(f"texts.{key}", "expected a string")
    theme = r.get("theme", dict, {})
    for key, value in theme.items():
        if (
            not key.startswith("--cg-")
            or not isinstance(value, str)
            or any(ch in value for ch in ";{}<>")
        ):
            raise r.fail(
                f"theme.{key}",
                "theme entries are `--cg-…` CSS custom properties with plain values",
                'e.g. "--cg-accent" = "#0b57d0"',
            )
    rules = r.get("rules", dict, {})
    for key, value in rules.items():
        if not isinstance(value, dict):
            raise r.fail(f"rules.{key}", "expected a table", 'e.g. [rules."US"] rule = "ccpa"')
    return Site(
        id=site_id,
        name=r.get("name", str, site_id),
        default_locale=default_locale,
        locales=locales,
        allowed_origins=r.strings("allowed_origins", ORIGIN),
        purposes=purposes,
        controller=r.get("controller", str, ""),
        contact=r.get("contact", str, ""),
        privacy_policy_url=r.get("privacy_policy_url", str, ""),
        cookie=CookieSettings(
            name=cookie_name,
            domain=c.get("domain", str, ""),
            max_age_days=max_age,
            reload_on_withdraw=c.get("reload_on_withdraw", bool, True),
        ),
        rule_overrides=rules,
        texts=texts,
        theme=theme,
        retained_versions=r.strings("retained_versions"),
        preferences=preferences,
        wechat=_wechat(path, r.get("wechat", dict)),
        rights=r.get("rights", dict, {}),
        tcf=parse_tcf(path, data.get("tcf"), {p.id for p in purposes}),
        gpp=parse_gpp(path, data.get("gpp")),
    )


def read_site(site_dir: Path) -> Site:
    """Read and validate ``<site_dir>/site.toml``."""
    path = site_dir / "site.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            "missing site.toml", where=str(site_dir), hint="copy banners/demo/site.toml to start"
        ) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", where=str(path)) from exc
    return parse_site(site_dir.name, path, data)
