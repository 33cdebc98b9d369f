"""The privacy center: a page where visitors review, change or withdraw their choices."""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from gateway.core import paths
from gateway.core.errors import ConfigError
from gateway.serving.render import render_template
from gateway.web.public import answer_context

TEMPLATE = "privacy_center.html"
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'"
)


async def privacy_center(request: Request) -> HTMLResponse:
    gateway, bundle, visitor, resolved, record_url = answer_context(request)
    config = resolved.config
    texts = resolved.texts
    site_id = bundle.site.id
    page_config: dict[str, Any] = {
        "language": config["language"],
        "banner_version": bundle.banner_version,
        "record_url": record_url,
        "history_url": gateway.base_url(request.url.scheme, request.headers.get("host"))
        + paths.url(paths.SUBJECT_CONSENTS, site=site_id, subject_id="__SUBJECT__"),
        "texts": {"saved": texts["saved"]},
        "rights_url": f"{record_url.rsplit('/', 1)[0]}/rights-requests",
        "names": {p["id"]: p["name"] for p in config["purposes"]},
        "actions": {
            "accept_all": texts["accept_all"],
            "reject_all": texts["reject_all"],
            "custom": texts["save"],
            "withdraw": texts["withdraw"],
            "gpc": "GPC",
        },
    }
    context = {
        "site": {
            "id": site_id,
            "name": bundle.site.name,
            "controller": bundle.site.controller,
            "contact": bundle.site.contact,
            "privacy_policy_url": bundle.site.privacy_policy_url,
        },
        "rule": resolved.rule.as_json(),
        "texts": texts,
        "purposes": config["purposes"],
        "language": config["language"],
        "dir": config["dir"],
        "theme": dict(bundle.site.theme),
        "gpc": resolved.gpc_applied,
        "page_config": page_config,
        "rights": {"types": _rights_types(request, site_id, resolved.rule.id)},
    }
    env = gateway.renderer.environment(bundle, visitor.language)
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
            "Vary": gateway.vary,
        },
    )


def _rights_types(request: Request, site_id: str, rule_id: str) -> tuple[str, ...]:
    """The rights the visitor's rule grants, as the rights service will accept them."""
    site_rights = getattr(request.app.state, "site_rights", None)
    found = site_rights(site_id) if site_rights is not None else None
    return found.policy(rule_id).types if found is not None else ()


def routes() -> list[Route]:
    return [Route(paths.PRIVACY_CENTER, privacy_center, methods=["GET", "HEAD"])]
