"""Visitor-facing endpoints of the serving path: config, banner, consent.js, gpc.json.

The three banner endpoints are ``AnswerEndpoint``s: the front (gateway/web/front.py) calls
them straight from the ASGI scope, ahead of Starlette's routing and request objects, because
this is the hot path; the routes call the same objects.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope

from gateway.core import paths
from gateway.core.errors import BadRequest, NotFound
from gateway.core.i18n import parse_lang_param
from gateway.core.model import Region, ResolvedBanner
from gateway.serving import parts
from gateway.serving.encodings import IDENTITY, Chooser
from gateway.serving.gateway import (
    Body,
    CachedAnswer,
    Encoded,
    Gateway,
    Visitor,
    parse_age_param,
    parse_region_param,
)
from gateway.signals.gpc import gpc_requested, well_known
from gateway.sites.catalog import SiteBundle
from gateway.web.answer import Answer, RawHeaders
from gateway.web.endpoint import AnswerEndpoint
from gateway.web.errors import answer_for

GPC_LAST_UPDATE = dt.date(2026, 11, 29)
KINDS = {paths.CONFIG: "config", paths.BANNER: "banner", paths.SNIPPET: "js", paths.PART: "part"}
# Longer Accept-Language values are rare: answered afresh, never remembered.
MEMO_ACCEPT_MAX = 200
# Counted per remembered answer beside its body: key text, headers and the tuples.
ENTRY_OVERHEAD = 512


def etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against a list of entity tags, or `*`."""
    if not header:
        return False
    for part in header.split(","):
        tag = part.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


# The request headers that, with the region and the query, decide a banner answer.
_ANSWER_HEADERS = frozenset(
    (b"host", b"accept-language", b"sec-gpc", b"if-none-match", b"accept-encoding")
)
Picked = tuple[str | None, str | None, list[str], str | None, str | None]


def _pick(raw: RawHeaders) -> Picked:
    """Host, Accept-Language, every Sec-GPC line, If-None-Match and Accept-Encoding."""
    host = accept = inm = coding = None
    gpc: list[str] = []
    # The comprehension runs in C-speed bytecode; the loop then sees a few headers.
    for name, value in [item for item in raw if item[0] in _ANSWER_HEADERS]:
        if name == b"host":
            if host is None:
                host = value.decode("latin-1")
        elif name == b"accept-language":
            if accept is None:
                accept = value.decode("latin-1")
        elif name == b"sec-gpc":
            gpc.append(value.decode("latin-1"))
        elif name == b"accept-encoding":
            # Several lines are one list (RFC 9110 §5.3).
            text = value.decode("latin-1")
            coding = text if coding is None else f"{coding}, {text}"
        elif inm is None:
            inm = value.decode("latin-1")
    return host, accept, gpc, inm, coding


CHOOSE_CODING = Chooser()


def overrides(query: bytes) -> tuple[str | None, str | None, str | None]:
    """The validated ``?lang=``, ``?region=`` and ``?age=`` of a query string; other
    parameters are ignored.

    Validated before the memo is consulted, so the memo is keyed only by values of a few
    characters that passed their grammar, never by the raw query.
    """
    if not query:
        return None, None, None
    params = dict(parse_qsl(query.decode("latin-1")))
    region = params.get("region")
    if region is not None:
        parse_region_param(region)
    lang = params.get("lang")
    if lang:
        parse_lang_param(lang)
    age = params.get("age")
    if age is not None:
        parse_age_param(age)
    return lang, region, age


def answer(
    gateway: Gateway,
    kind: str,
    site_id: str,
    peer: str | None,
    raw: RawHeaders,
    query: bytes,
    scheme: str,
) -> Answer:
    """Status, headers and body for one banner request; raises BadRequest on bad input.

    Once the region is known, the answer depends only on the normalized values in the memo
    key, so repeated requests skip negotiation, rule lookup and rendering altogether. A 304
    is worked out after the lookup, from the remembered ETag.
    """
    bundle = gateway.catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    headers = Headers(raw=raw)
    ip, region = gateway.locator.locate(peer, headers)
    lang, region_param, age = overrides(query)
    host, accept, gpc_values, if_none_match, accept_encoding = _pick(raw)
    # The Host matters only when it becomes the record URL (no configured public URL).
    key = (
        kind,
        bundle.banner_version,
        site_id,
        region,
        lang,
        region_param,
        age,
        scheme,
        None if gateway.public_base else host,
        accept,
        gpc_requested(gpc_values),
    )
    cached = gateway.answers.get(key)
    if cached is None:
        cached = _fresh(
            gateway, kind, bundle, ip, region, headers, (lang, region_param, age), scheme, host
        )
        if len(accept or "") <= MEMO_ACCEPT_MAX:
            # Every encoding's body counts against the memo's bound.
            held = sum(len(ok[2]) for _, ok, _ in cached[0].values())
            size = held + len(accept or "") + len(host or "") + ENTRY_OVERHEAD
            gateway.answers.put(key, cached, size)
    variants, seen = cached
    if seen is not None:  # a banner shown, not a part the visitor opened
        gateway.impressions.count(seen)
    encoded = variants.get(CHOOSE_CODING(accept_encoding))
    etag, ok, not_modified = encoded if encoded is not None else variants[IDENTITY]
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return not_modified
    return ok


def _fresh(
    gateway: Gateway,
    kind: str,
    bundle: SiteBundle,
    ip: str | None,
    region: Region,
    headers: Headers,
    query: tuple[str | None, str | None, str | None],
    scheme: str,
    host: str | None,
) -> CachedAnswer:
    """Per content coding the ETag, the 200 and the 304 answer for one memo key, and the
    impression key."""
    names = ("lang", "region", "age")
    params = {k: v for k, v in zip(names, query, strict=True) if v is not None}
    visitor = gateway.visitor_from(bundle, ip, region, headers, params)
    record_url = gateway.record_url(scheme, host, bundle.site.id)
    body = gateway.body(kind, bundle, visitor, record_url)
    variants = {coding: _encoded(gateway, kind, body, coding) for coding in body.variants}
    region_name = visitor.region.country or ""
    if visitor.region.subdivision:
        region_name += "-" + visitor.region.subdivision
    if kind.startswith("part:"):
        return variants, None
    # Apps fetch the config; pages load consent.js or the banner page.
    channel = "app" if kind == "config" else "web"
    seen = (bundle.site.id, bundle.banner_version, visitor.rule.id, region_name,
            visitor.language, channel)  # fmt: skip
    return variants, seen


def _encoded(gateway: Gateway, kind: str, body: Body, coding: str) -> Encoded:
    """The ETag, the 200 and the 304 of one encoding of ``body``."""
    variant = body.variants[coding]
    scope = b"public" if body.public else b"private"
    out: RawHeaders = [
        (b"etag", variant.etag.encode()),
        (b"cache-control", scope + b", max-age=" + gateway.max_age),
        (b"vary", gateway.vary.encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    if kind == "config" or kind.startswith("part:"):
        # Apps and mini-programs fetch the config cross-origin, the snippet its parts; both
        # without credentials.
        out.append((b"access-control-allow-origin", b"*"))
    ok = [*out, (b"content-type", body.media_type.encode())]
    if coding != IDENTITY:
        ok.append((b"content-encoding", coding.encode()))
    ok.append((b"content-length", str(len(variant.content)).encode()))
    return variant.etag, (200, ok, variant.content), (304, out, b"")


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


def _serve(kind: str) -> AnswerEndpoint:
    async def respond(scope: Scope, receive: Receive) -> Answer:
        gateway: Gateway = scope["app"].state.gateway
        client = scope.get("client")
        params = scope["path_params"]
        try:
            what = kind
            if kind == "part":
                if not parts.exists(params["part"]):
                    raise NotFound("unknown_part", f"no part named {params['part'][:64]!r}")
                what = "part:" + params["part"]
            return answer(
                gateway,
                what,
                params["site"],
                client[0] if client else None,
                scope["headers"],
                scope.get("query_string", b""),
                scope["scheme"],
            )
        except BadRequest as exc:
            return answer_for(exc)

    return AnswerEndpoint(f"serve_{kind}", respond)


ENDPOINTS = {template: _serve(kind) for template, kind in KINDS.items()}


async def gpc_json(request: Request) -> Response:
    return Response(
        well_known(GPC_LAST_UPDATE),
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=86400", "Access-Control-Allow-Origin": "*"},
    )


def routes() -> list[Route]:
    return [
        *(
            Route(template, endpoint, methods=["GET", "HEAD"])
            for template, endpoint in ENDPOINTS.items()
        ),
        Route(paths.GPC_JSON, gpc_json, methods=["GET", "HEAD"]),
    ]
