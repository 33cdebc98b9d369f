"""My privacy center: a page where a visitor or customer reviews, changes or withdraws their
consents and contact preferences, reads their history and exercises their rights.

The page is one template (``privacy_center.html``, sandboxed and overridable block by block
like the banner's) and one script of our own (``static/privacy-center.js``, served from this
origin: the page runs no inline script and asks nothing of a third party). Everything the
visitor does goes through the public API, same origin: the page holds no data of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from jinja2 import TemplateError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.core import paths
from gateway.core.errors import BadRequest, ConfigError, NotFound
from gateway.core.model import Site
from gateway.core.preference_model import PreferenceModel
from gateway.serving.render import render_template
from gateway.sites.catalog import SiteBundle, static_dir
from gateway.web.public import answer_context

TEMPLATE = "privacy_center.html"
SCRIPT = "privacy-center.js"
# No inline script: the page's data travels in a JSON block, which CSP does not execute.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'"
)
_VERSION = re.compile(r"^[0-9a-f]{6,64}$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8}){0,2}$")
_RULE = re.compile(r"^[a-z0-9_-]{1,64}$")


def preference_scopes(
    model: PreferenceModel, gettext: Callable[[str], str]
) -> list[dict[str, Any]]:
    """The preference forms: site-wide (``id`` and ``name`` "": the template names it) first,
    then one per product line, each with the topics it may choose and their channels and
    frequencies, localized."""
    channels = {c.id: gettext(c.name) for c in model.channels}
    frequencies = {f.id: gettext(f.name) for f in model.frequencies}
    lines = [("", "", "")] + [
        (p.id, gettext(p.name), gettext(p.description) if p.description else "")
        for p in model.product_lines
    ]
    scopes = []
    for line_id, name, description in lines:
        topics = [
            {
                "id": t.id,
                "name": gettext(t.name),
                "description": gettext(t.description) if t.description else "",
                "channels": [{"id": c, "name": channels.get(c, c)} for c in t.channels],
                "frequencies": [{"id": f, "name": frequencies.get(f, f)} for f in t.frequencies],
                "default_frequency": t.default_frequency,
            }
            for t in model.topics
            if not line_id or not t.product_lines or line_id in t.product_lines
        ]
        scopes.append({"id": line_id, "name": name, "description": description, "topics": topics})
    if not model.topics and not model.channels:
        return []
    return scopes


def purpose_groups(
    site: Site, purposes: Sequence[dict[str, Any]], gettext: Callable[[str], str]
) -> list[dict[str, Any]]:
    """The purposes by product line: those for every product first (``id`` and ``name`` ""),
    then each line's own."""
    scoped = {p.id: p.product_lines for p in site.purposes}
    names = [("", "")] + [(line.id, gettext(line.name)) for line in site.preferences.product_lines]
    members: dict[str, list[dict[str, Any]]] = {line: [] for line, _ in names}
    for purpose in purposes:
        for line in scoped.get(purpose["id"], ()) or ("",):
            members[line].append(purpose)
    return [
        {"id": line, "name": name, "purposes": members[line]}
        for line, name in names
        if members[line]
    ]


def _labels(
    purposes: Sequence[dict[str, Any]],
    channels: Sequence[dict[str, Any]],
    scopes: Sequence[dict[str, Any]],
) -> dict[str, dict[str, str]]:
    """Names the script prints in the history: purposes, channels, topics, frequencies."""
    labels: dict[str, dict[str, str]] = {
        "purposes": {p["id"]: p["name"] for p in purposes},
        "lines": {s["id"]: s["name"] for s in scopes},
        "topics": {},
        "channels": {c["id"]: c["name"] for c in channels},
        "frequencies": {},
    }
    for scope in scopes:
        for topic in scope["topics"]:
            labels["topics"][topic["id"]] = topic["name"]
            labels["frequencies"].update({f["id"]: f["name"] for f in topic["frequencies"]})
    return labels


async def privacy_center(request: Request) -> HTMLResponse:
    gateway, bundle, visitor, resolved, _record_url = answer_context(request)
    config = resolved.config
    site = bundle.site
    gettext = bundle.translations.get(visitor.language).gettext
    env = gateway.renderer.environment(bundle, visitor.language)
    model = site.preferences
    channels = [
        # An empty msgid would translate to the catalog's header: never ask for one.
        {
            "id": c.id,
            "name": gettext(c.name),
            "description": gettext(c.description) if c.description else "",
        }
        for c in model.channels
    ]
    scopes = preference_scopes(model, gettext)
    purposes = [dict(p) for p in config["purposes"]]
    page_config: dict[str, Any] = {
        "site": site.id,
        "language": config["language"],
        "banner_version": bundle.banner_version,
        "cookie": site.cookie.name,
        # Relative to the page, so they stay on its origin behind any proxy prefix.
        "urls": {
            "consents": "consents",
            "history": "subjects/{subject}/consents",
            "state": "subjects/{subject}",
            "preferences": "preferences",
            "identify": "identify",
            "rights": "rights-requests",
            "version": "versions/{version}",
        },
        "purposes": [
            {k: p.get(k) for k in ("id", "essential", "separate", "prohibited")} for p in purposes
        ],
        "labels": _labels(purposes, channels, scopes),
    }
    context = {
        "site": {
            "id": site.id,
            "name": site.name,
            "controller": site.controller,
            "contact": site.contact,
            "privacy_policy_url": site.privacy_policy_url,
        },
        "rule": resolved.rule.as_json(),
        "texts": resolved.texts,
        "purposes": purposes,
        "language": config["language"],
        "dir": config["dir"],
        "theme": dict(site.theme),
        "gpc": resolved.gpc_applied,
        "page_config": page_config,
        "purpose_groups": purpose_groups(site, purposes, gettext),
        "channels": channels,
        "preference_scopes": scopes,
        "rights": {
            "types": _rights_types(request, site.id, resolved.rule.id),
            "email_verification": bool(request.app.state.settings.smtp_url),
        },
    }
    try:
        html = render_template(env, TEMPLATE, context)
    except TemplateError as exc:
        raise ConfigError(f"template error: {exc}", where=str(bundle.directory)) from exc
    return HTMLResponse(
        html,
        headers={
            "Cache-Control": "private, no-cache",
            "Content-Security-Policy": CSP,
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Vary": gateway.vary,
        },
    )


def _rights_types(request: Request, site_id: str, rule_id: str) -> tuple[str, ...]:
    """The rights the visitor's rule grants, as the rights service will accept them."""
    site_rights = getattr(request.app.state, "site_rights", None)
    found = site_rights(site_id) if site_rights is not None else None
    return found.policy(rule_id).types if found is not None else ()


async def script(request: Request) -> Response:
    """The page's script: public code, no data, the same for every site."""
    return Response(
        (static_dir() / SCRIPT).read_bytes(),
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


def _bundle(request: Request) -> SiteBundle:
    site_id = request.path_params["site"]
    bundle: SiteBundle | None = request.app.state.gateway.catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    return bundle


def _query(request: Request, name: str, pattern: re.Pattern[str], default: str) -> str:
    value = request.query_params.get(name, default)
    if not pattern.match(value):
        raise BadRequest("invalid_parameter", f"{name} is malformed", field=name)
    return value


async def version_texts(request: Request) -> Response:
    """What a banner version showed in one language and rule model: the texts a record's
    visitor saw (``?lang=`` the record's language, ``?rule=`` its rule id). Public: every
    visitor of that version was shown them; immutable, a version is a content hash."""
    bundle = _bundle(request)
    version = request.path_params["banner_version"]
    if not _VERSION.match(version):
        raise NotFound("unknown_version", "no such banner version")
    site = bundle.site
    locale = _query(request, "lang", _LOCALE, site.default_locale).replace("-", "_")
    rule_id = _query(request, "rule", _RULE, "default")
    stored = await request.app.state.recording.banner_version(site.id, version)
    if stored is None:
        raise NotFound("unknown_version", "no such banner version")
    texts = stored["texts"]
    if locale not in texts:
        locale = site.default_locale if site.default_locale in texts else next(iter(texts))
    rule = bundle.rules.table.rules.get(rule_id)
    model = rule.model if rule is not None else "opt-in"
    shown = texts[locale]
    by_model = shown.get("texts", {})
    body = {
        "banner_version": version,
        "consent_revision": stored.get("consent_revision"),
        "published_at": stored.get("published_at"),
        "language": locale,
        "model": model,
        "texts": by_model.get(model) or next(iter(by_model.values()), {}),
        "purposes": shown.get("purposes", {}),
    }
    return Response(
        orjson.dumps(body),
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=86400, immutable"},
    )


def routes() -> list[Route]:
    base = paths.PRIVACY_CENTER
    return [
        Route(base, privacy_center, methods=["GET", "HEAD"]),
        Route(base + ".js", script, methods=["GET", "HEAD"]),
        Route("/v1/sites/{site}/versions/{banner_version}", version_texts, methods=["GET"]),
    ]
