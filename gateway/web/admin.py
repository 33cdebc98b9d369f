"""Admin endpoints behind a bearer token: reload, versions, preview."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.core.errors import NotFound
from gateway.web.auth import authorize
from gateway.web.preview import preview


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(
        orjson.dumps(data),
        status_code=status_code,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def reload(request: Request) -> Response:
    authorize(request)
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
