"""Admin endpoints behind a bearer token: reload, versions, preview; and publishing texts."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.core.errors import NotFound
from gateway.sites.catalog import SiteBundle
from gateway.sites.texts import DESCRIPTIONS, source_texts
from gateway.web.auth import authorize, authorize_write
from gateway.web.preview import preview

log = logging.getLogger("gateway.admin")


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(
        orjson.dumps(data),
        status_code=status_code,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def published_texts(bundle: SiteBundle) -> dict[str, dict[str, Any]]:
    """The exact texts of every locale and rule model: what a record's version resolves to."""
    site = bundle.site
    out: dict[str, dict[str, Any]] = {}
    for locale in site.locales:
        tr = bundle.translations.get(locale)
        out[locale] = {
            "texts": {
                model: {k: tr.gettext(v) for k, v in source_texts(model, site.texts).items()}
                for model in DESCRIPTIONS
            },
            "purposes": {
                p.id: {"name": tr.gettext(p.name), "description": tr.gettext(p.description)}
                for p in site.purposes
            },
        }
    return out


async def publish_current(app_state: Any) -> None:
    """Store the texts of every site's current version (idempotent per version)."""
    for bundle in app_state.gateway.catalog:
        try:
            await app_state.recording.publish_version(
                bundle.site.id,
                bundle.banner_version,
                bundle.consent_revision,
                published_texts(bundle),
            )
        except Exception:  # the store may be down; the forwarder's backlog is what matters
            log.exception("could not publish %s@%s", bundle.site.id, bundle.banner_version)


async def reload(request: Request) -> Response:
    authorize_write(request)
    ok = await request.app.state.watcher.reload()
    catalog = request.app.state.gateway.catalog
    body = {
        "reloaded": ok,
        "error": catalog.last_error,
        "sites": {b.site.id: b.banner_version for b in catalog},
    }
    return _json(body, 200 if ok else 422)


async def versions(request: Request) -> Response:
    authorize(request)
    site_id = request.path_params["site"]
    bundle = request.app.state.gateway.catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    stored = await request.app.state.recording.list_versions(site_id)
    return _json(
        {
            "site": site_id,
            "current": bundle.banner_version,
            "consent_revision": bundle.consent_revision,
            "versions": stored,
        }
    )


def routes() -> list[Route]:
    return [
        Route("/admin/v1/reload", reload, methods=["POST"]),
        Route("/admin/v1/sites/{site}/versions", versions, methods=["GET"]),
        Route("/admin/preview", preview, methods=["GET"]),
    ]
