"""Visitor-facing endpoints of the serving path: config, banner, consent.js, gpc.json.

The three banner endpoints are answered by ``answer()``. The front (gateway/web/front.py)
calls it straight from the ASGI scope, ahead of Starlette's routing and request objects,
because this is the hot path; anything it cannot answer (errors included) goes on to the
regular routes, which call the same function.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.core.errors import NotFound
from gateway.core.model import ResolvedBanner
from gateway.serving.gateway import Gateway, Visitor
from gateway.signals.gpc import well_known
from gateway.sites.catalog import SiteBundle

GPC_LAST_UPDATE = dt.date(2026, 11, 29)
KINDS = {"config": "config", "banner": "banner", "consent.js": "js"}
PATH = re.compile(r"^/v1/sites/([^/]{1,64})/(config|banner|consent\.js)$")

RawHeaders = list[tuple[bytes, bytes]]
Answer = tuple[int, RawHeaders, bytes]
# The request headers that, with the region and the query, decide a banner answer.
ANSWER_HEADERS = frozenset({b"host", b"accept-language", b"sec-gpc", b"if-none-match"})
MAX_ANSWERS = 16384


def etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against a list of entity tags, or `*`."""
    if not header:
        return False
    for part in header.split(","):
        tag = part.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def answer(
    gateway: Gateway,
    kind: str,
    site_id: str,
    peer: str | None,
    headers: Headers,
    query: bytes,
    scheme: str,
) -> Answer:
    """Status, headers and body for one banner request; raises GatewayError on bad input.

    Once the region is known, the answer depends only on the raw values in the memo key, so
    repeated requests skip negotiation, rule lookup and rendering altogether.
    """
    bundle = gateway.catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    ip, region = gateway.locator.locate(peer, headers)
    key = (
        kind,
        bundle.banner_version,
        site_id,
        region,
        query,
        scheme,
        *[item for item in headers.raw if item[0] in ANSWER_HEADERS],
    )
    memo = gateway.answers.get(key)
    if memo is not None:
        return memo
    get = headers.get
    params = dict(parse_qsl(query.decode("latin-1"))) if query else {}
    visitor = gateway.visitor_from(bundle, ip, region, headers, params)
    record_url = gateway.record_url(scheme, get("host"), site_id)
    body = gateway.body(kind, bundle, visitor, record_url)
    scope = b"public" if body.public else b"private"
    out: RawHeaders = [
        (b"etag", body.etag.encode()),
        (b"cache-control", scope + b", max-age=" + gateway.max_age),
        (b"vary", gateway.vary.encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    if kind == "config":
        # Apps and mini-programs fetch the config cross-origin, without credentials.
        out.append((b"access-control-allow-origin", b"*"))
    if etag_matches(get("if-none-match"), body.etag):
        result: Answer = (304, out, b"")
    else:
        out.append((b"content-type", body.media_type.encode()))
        out.append((b"content-length", str(len(body.content)).encode()))
        result = (200, out, body.content)
    if len(gateway.answers) >= MAX_ANSWERS:
        gateway.answers.clear()  # a crude bound, but O(1) on the hot path, unlike an LRU
    gateway.answers[key] = result
    return result


def answer_context(request: Request) -> tuple[Gateway, SiteBundle, Visitor, ResolvedBanner, str]:
    """The resolved banner behind a Starlette request, for pages built on it."""
    gateway: Gateway = request.app.state.gateway
    site_id = request.path_params["site"]
    bundle = gateway.catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    visitor = gateway.visitor(request, bundle)
    record_url = gateway.record_url(request.url.scheme, request.headers.get("host"), site_id)
    return gateway, bundle, visitor, gateway.resolve(bundle, visitor), record_url


def _endpoint(kind: str):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> Response:
        client = request.client
        status, headers, body = answer(
            request.app.state.gateway,
            kind,
            request.path_params["site"],
            client.host if client else None,
            request.headers,
            request.scope.get("query_string", b""),
            request.url.scheme,
        )
        response = Response(status_code=status)
        response.body = body
        response.raw_headers = list(headers)
        return response

    endpoint.__name__ = f"serve_{kind}"
    return endpoint


ENDPOINTS = {path: _endpoint(kind) for path, kind in KINDS.items()}


async def gpc_json(request: Request) -> Response:
    return Response(
        well_known(GPC_LAST_UPDATE),
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=86400", "Access-Control-Allow-Origin": "*"},
    )


def routes() -> list[Route]:
    return [
        *(
            Route(f"/v1/sites/{{site}}/{path}", endpoint, methods=["GET", "HEAD"])
            for path, endpoint in ENDPOINTS.items()
        ),
        Route("/.well-known/gpc.json", gpc_json, methods=["GET", "HEAD"]),
    ]
