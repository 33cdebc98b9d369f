"""Resolves a banner for (site, version, rule, locale, gpc): texts, config and HTML, cached."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cachetools import LRUCache
from jinja2 import (
    BytecodeCache,
    ChoiceLoader,
    Environment,
    PrefixLoader,
    StrictUndefined,
    Template,
    TemplateError,
    select_autoescape,
)
from jinja2.bccache import Bucket

from gateway.core.errors import ConfigError
from gateway.core.i18n import bcp47, direction
from gateway.core.model import ResolvedBanner, Rule, Site
from gateway.core.purposes import is_exempt, prohibited_by, separate_kind
from gateway.serving import sandbox
from gateway.signals import consent_mode, gpc
from gateway.sites import texts as builtin_texts
from gateway.sites.catalog import DEFAULT_TEMPLATES, SiteBundle

TEMPLATES = ("banner.html", "preferences.html")

# The variables every banner template receives; docs/templates.md is generated from this
# table and a test keeps the two equal.
TEMPLATE_VARIABLES: Mapping[str, str] = {
    "site": "dict: id, name, controller, contact, privacy_policy_url",
    "rule": "dict: the jurisdiction rule (id, model, gpc, reject_on_first_layer, "
    "do_not_sell_link, limit_sensitive_link, separate_consent, …)",
    "texts": "dict: translated banner texts by key (title, description, accept_all, …)",
    "purposes": "list of dicts: id, name, description, essential, default, separate, "
    "sale_or_share, prohibited, exempt, refusal_persists, recipients, retention, cookies, "
    "consent_mode, wechat_apis",
    "language": "the BCP 47 language tag of the texts, e.g. zh-Hans",
    "dir": "text direction: ltr or rtl",
    "theme": "dict: CSS custom properties from site.toml [theme]",
    "gpc": "bool: the visitor's browser sent Global Privacy Control and the rule honours it "
    "(as an opt-out of sale/sharing, or as an objection where rule.gpc_objects)",
}

# Variables that one template receives beyond TEMPLATE_VARIABLES.
EXTRA_VARIABLES: Mapping[str, Mapping[str, str]] = {
    "privacy_center.html": {
        "page_config": "dict: what the page's script reads (site, language, banner_version, "
        "urls, purposes, labels); the template puts it in a JSON block",
        "purpose_groups": "list of dicts: id (a product line, or empty for all), name (empty "
        "for all), purposes (as `purposes`)",
        "channels": "list of dicts: id, name, description of the site's contact channels",
        "preference_scopes": "list of dicts: id (a product line, or empty for all), name, "
        "description, topics (id, name, description, channels [id, name], frequencies "
        "[id, name], default_frequency)",
        "rights": "dict: types (the rights requests the visitor's rule offers), "
        "email_verification (bool: the gateway can send e-mail codes)",
    },
}


def variables_of(name: str) -> set[str]:
    """The variables template ``name`` may read; a file other templates include gets all."""
    if name in EXTRA_VARIABLES or name in TEMPLATES:
        return {*TEMPLATE_VARIABLES, *EXTRA_VARIABLES.get(name, {})}
    return {*TEMPLATE_VARIABLES, *(v for extra in EXTRA_VARIABLES.values() for v in extra)}


def purpose_configs(
    site: Site, rule: Rule, gettext: Callable[[str], str], gpc_applied: bool, minor: bool
) -> list[dict[str, Any]]:
    """The ``purposes`` of the config: what the rule makes of each, for the snippet to follow.

    ``separate``: the kind of consent it needs on its own, never bundled into "accept all"
    (PIPL Arts. 23, 25, 29, 39 and wherever a rule lists the kind). ``prohibited``: why the law
    bans it outright (or for this known minor); it is never on and never offered.
    ``exempt``: it runs before a choice on an exemption, with information and an objection
    (UK). ``refusal_persists``: it is on before any choice, so a refusal of it must outlive
    re-ask periods, cookie expiry and ``consent_revision`` changes until the visitor changes it.
    """
    defaults = gpc.default_choices(rule, site, gpc_applied, minor)
    before_signals = gpc.default_choices(rule, site, False, minor)
    return [
        {
            "id": p.id,
            "name": gettext(p.name),
            "description": gettext(p.description),
            "essential": p.essential,
            "default": defaults.get(p.id, p.essential),
            "separate": separate_kind(rule, p),
            "sale_or_share": p.sale_or_share,
            "prohibited": prohibited_by(rule, p, minor),
            "exempt": is_exempt(rule, p),
            "refusal_persists": not p.essential and before_signals[p.id],
            "recipients": list(p.recipients),
            "retention": p.retention,
            "cookies": list(p.cookies),
            "consent_mode": list(p.consent_mode),
            "wechat_apis": list(p.wechat_apis),
        }
        for p in site.purposes
    ]


def wechat_config(site: Site) -> dict[str, Any] | None:
    """The config's ``wechat`` block for mini-programs, or None when the site sets none.

    The WeChat privacy agreement does not replace PIPL's separate consents: those stay per
    purpose (``separate``); ``apis`` lists the privacy APIs each purpose's agreement unlocks.
    """
    if site.wechat is None:
        return None
    return {
        "privacy_contract_name": site.wechat.privacy_contract_name,
        "agree_button_id": site.wechat.agree_button_id,
        "apis": {p.id: list(p.wechat_apis) for p in site.purposes if p.wechat_apis},
    }


class SharedBytecode(BytecodeCache):
    """Compiled templates shared by the per-locale environments: compile once, not per locale.

    Entries are checked against the source checksum, so an edited template recompiles.
    """

    def __init__(self) -> None:
        self._code: dict[str, tuple[str, Any]] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        entry = self._code.get(bucket.key)
        if entry is not None and entry[0] == bucket.checksum:
            bucket.code = entry[1]

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._code[bucket.key] = (bucket.checksum, bucket.code)


def make_environment(
    site_dir: Path | None, translations: Any, bytecode_cache: BytecodeCache | None = None
) -> Environment:
    """One sandboxed environment per (site, locale): translations are never swapped per
    request, and a site's templates see only what gateway/serving/sandbox.py allows."""
    site_loader = [sandbox.ConfinedLoader(str(site_dir))] if site_dir else []
    defaults = sandbox.ConfinedLoader(str(DEFAULT_TEMPLATES))
    env = sandbox.TemplateSandbox(
        loader=ChoiceLoader(
            [
                PrefixLoader({"default": defaults}, delimiter=":"),
                *site_loader,
                defaults,
            ]
        ),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        auto_reload=False,
        bytecode_cache=bytecode_cache,
    )
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    return env


def render_template(env: Environment, name: str, context: Mapping[str, Any]) -> str:
    """Render a site's template within the sandbox's bounds; failures are TemplateErrors."""
    template: Template = env.get_template(name)
    return sandbox.render(template, context)


class Renderer:
    """Builds and caches resolved banners; the key never holds per-visitor data."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._cache: LRUCache[tuple[Any, ...], ResolvedBanner] = LRUCache(max_entries)
        self._envs: LRUCache[tuple[str, str, str], Environment] = LRUCache(1024)
        self._lock = threading.Lock()
        self._bytecode = SharedBytecode()  # about 3x cheaper cold renders with many locales

    def environment(self, bundle: SiteBundle, locale: str) -> Environment:
        key = (bundle.site.id, bundle.banner_version, locale)
        env = self._envs.get(key)
        if env is None:
            env = make_environment(
                bundle.directory, bundle.translations.get(locale), self._bytecode
            )
            self._envs[key] = env
        return env

    def resolve(
        self, bundle: SiteBundle, rule: Rule, locale: str, gpc_signal: bool, minor: bool = False
    ) -> ResolvedBanner:
        applied = gpc_signal and gpc.honours(rule)
        minor = minor and bool(rule.minor_age)
        key = (bundle.site.id, bundle.banner_version, rule.id, id(rule), locale, applied, minor)
        entry = self._cache.get(key)
        if entry is not None and entry.rule is rule:
            return entry
        entry = self._build(bundle, rule, locale, applied, minor)
        with self._lock:
            self._cache[key] = entry
        return entry

    def _build(
        self, bundle: SiteBundle, rule: Rule, locale: str, gpc_applied: bool, minor: bool
    ) -> ResolvedBanner:
        site = bundle.site
        tr = bundle.translations.get(locale)
        objection = any(not p.essential and is_exempt(rule, p) for p in site.purposes)
        sources = builtin_texts.source_texts(rule.model, site.texts, objection=objection)
        texts = {key: tr.gettext(msgid) for key, msgid in sources.items()}
        fallbacks = tuple(
            key
            for key, msgid in sources.items()
            if locale != site.default_locale and not bundle.translations.has(locale, msgid)
        )
        purposes = purpose_configs(site, rule, tr.gettext, gpc_applied, minor)
        mode_defaults = consent_mode.defaults(rule, site, gpc=gpc_applied, minor=minor)
        language = bcp47(locale)
        text_dir = direction(locale)
        site_info = {
            "id": site.id,
            "name": site.name,
            "controller": site.controller,
            "contact": site.contact,
            "privacy_policy_url": site.privacy_policy_url,
        }
        context = {
            "site": site_info,
            "rule": rule.as_json(),
            "texts": texts,
            "purposes": purposes,
            "language": language,
            "dir": text_dir,
            "theme": dict(site.theme),
            "gpc": gpc_applied,
        }
        env = self.environment(bundle, locale)
        try:
            html = {name.split(".")[0]: render_template(env, name, context) for name in TEMPLATES}
        except TemplateError as exc:
            raise ConfigError(
                f"template error: {exc}",
                where=f"{bundle.directory}",
                hint="preview the site with /admin/preview to see it",
            ) from exc
        config: dict[str, Any] = {
            "site": site.id,
            "banner_version": bundle.banner_version,
            "consent_revision": bundle.consent_revision,
            "language": language,
            "dir": text_dir,
            "rule": rule.as_json(),
            "purposes": purposes,
            "texts": texts,
            "consent_mode": {
                "default": mode_defaults,
                "wait_for_update": consent_mode.WAIT_FOR_UPDATE_MS,
            },
            "cookie": {
                "name": site.cookie.name,
                "domain": site.cookie.domain,
                "max_age_days": site.cookie.max_age_days,
                "reload_on_withdraw": site.cookie.reload_on_withdraw,
            },
            "theme": dict(site.theme),
            "privacy_policy_url": site.privacy_policy_url,
            "controller": site.controller,
            "minor": minor,
            "wechat": wechat_config(site),
        }
        return ResolvedBanner(
            site_id=site.id,
            banner_version=bundle.banner_version,
            consent_revision=bundle.consent_revision,
            rule=rule,
            locale=locale,
            config=config,
            html=html["banner"],
            texts=texts,
            fallbacks=fallbacks,
            preferences_html=html["preferences"],
            gpc_applied=gpc_applied,
            minor=minor,
        )

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._envs.clear()
