"""Admin endpoints behind a bearer token: reload, versions, preview; and publishing texts."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.catalog import SiteBundle
from gateway.errors import BadRequest, NotFound
from gateway.texts import DESCRIPTIONS, source_texts

log = logging.getLogger("gateway.admin")


def authorize(request: Request) -> None:
    """Constant-time bearer check; admin is disabled entirely while the token is empty."""
    token = request.app.state.settings.admin_token
    if not token:
        raise NotFound("admin_disabled", "set GATEWAY_ADMIN_TOKEN to enable the admin API")
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    secret = given.strip().encode("latin-1", "replace")
    if scheme.lower() == "basic":
        # Browsers can open /admin/preview with the token as the Basic password.
        try:
            secret = base64.b64decode(secret, validate=True).partition(b":")[2]
        except (binascii.Error, ValueError):
            secret = b""
    elif scheme.lower() != "bearer":
        secret = b""
    if not hmac.compare_digest(secret, token.encode()):
        raise BadRequest("unauthorized", "a valid `Authorization: Bearer <token>` (or Basic "
                         "with the token as password) is required", status_code=401)


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def published_texts(bundle: SiteBundle) -> dict[str, dict[str, Any]]:
    """The exact texts of every locale and rule model: what a record's version resolves to."""
    site = bundle.site
    out: dict[str, dict[str, Any]] = {}
    for locale in site.locales:
        tr = bundle.translations.get(locale)
        out[locale] = {
            "texts": {model: {k: tr.gettext(v) for k, v in source_texts(model, site.texts).items()}
                      for model in DESCRIPTIONS},
            "purposes": {p.id: {"name": tr.gettext(p.name),
                                "description": tr.gettext(p.description)}
                         for p in site.purposes},
        }
    return out


async def publish_current(app_state: Any) -> None:
    """Store the texts of every site's current version (idempotent per version)."""
    for bundle in app_state.gateway.catalog:
        try:
            await app_state.recording.publish_version(
                bundle.site.id, bundle.banner_version, bundle.consent_revision,
                published_texts(bundle))
        except Exception:  # the store may be down; the forwarder's backlog is what matters
            log.exception("could not publish %s@%s", bundle.site.id, bundle.banner_version)


async def reload(request: Request) -> Response:
    authorize(request)
    ok = await request.app.state.watcher.reload()
    catalog = request.app.state.gateway.catalog
    body = {"reloaded": ok, "error": catalog.last_error,
            "sites": {b.site.id: b.banner_version for b in catalog}}
    return _json(body, 200 if ok else 422)


async def versions(request: Request) -> Response:
    authorize(request)
    site_id = request.path_params["site"]
    bundle = request.app.state.gateway.catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    stored = await request.app.state.recording.list_versions(site_id)
    return _json({"site": site_id, "current": bundle.banner_version,
                  "consent_revision": bundle.consent_revision, "versions": stored})


def routes() -> list[Route]:
    from gateway.web.preview import preview

    return [
        Route("/admin/v1/reload", reload, methods=["POST"]),
        Route("/admin/v1/sites/{site}/versions", versions, methods=["GET"]),
        Route("/admin/preview", preview, methods=["GET"]),
    ]
