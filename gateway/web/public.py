"""Visitor-facing endpoints of the serving path: config, banner, consent.js, gpc.json."""

from __future__ import annotations

import datetime as dt

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.catalog import SiteBundle
from gateway.errors import NotFound
from gateway.serving import Body, Gateway
from gateway.signals.gpc import well_known

GPC_LAST_UPDATE = dt.date(2026, 11, 29)


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def site_bundle(request: Request) -> SiteBundle:
    site_id = request.path_params["site"]
    bundle = _gateway(request).catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    return bundle


def etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against a list of entity tags, or `*`."""
    if not header:
        return False
    for part in header.split(","):
        tag = part.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _respond(request: Request, body: Body, gateway: Gateway) -> Response:
    max_age = gateway.settings.cache_max_age
    scope = "public" if body.public else "private"
    headers = {
        "ETag": body.etag,
        "Cache-Control": f"{scope}, max-age={max_age}",
        "Vary": gateway.vary,
        "X-Content-Type-Options": "nosniff",
    }
    if etag_matches(request.headers.get("if-none-match"), body.etag):
        return Response(status_code=304, headers=headers)
    return Response(body.content, media_type=body.media_type, headers=headers)


def _serve(kind: str):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> Response:
        gateway = _gateway(request)
        bundle = site_bundle(request)
        visitor = gateway.visitor(request, bundle)
        record_url = gateway.record_url(request, bundle.site.id)
        body = gateway.body(kind, bundle, visitor, record_url)
        response = _respond(request, body, gateway)
        if kind == "config":
            # Apps and mini-programs fetch the config cross-origin without credentials.
            response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    endpoint.__name__ = f"serve_{kind.replace('.', '_')}"
    return endpoint


async def gpc_json(request: Request) -> Response:
    return Response(
        well_known(GPC_LAST_UPDATE),
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=86400", "Access-Control-Allow-Origin": "*"},
    )


def routes() -> list[Route]:
    return [
        Route("/v1/sites/{site}/config", _serve("config"), methods=["GET", "HEAD"]),
        Route("/v1/sites/{site}/banner", _serve("banner"), methods=["GET", "HEAD"]),
        Route("/v1/sites/{site}/consent.js", _serve("js"), methods=["GET", "HEAD"]),
        Route("/.well-known/gpc.json", gpc_json, methods=["GET", "HEAD"]),
    ]
