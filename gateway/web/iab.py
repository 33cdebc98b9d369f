"""The IAB endpoints: tcf.js (the CMP, loaded by consent.js's stub where TCF/GPP apply) and
``POST …/iab-strings`` (the strings for a choice already recorded, when the vendor list, the
revision or the visitor's sections changed since they were issued)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.core import paths
from gateway.core.errors import BadRequest, NotFound, Unavailable
from gateway.core.model import Site
from gateway.core.ratelimit import RateLimited, client_key, retry_after
from gateway.recording.fields import parse_body
from gateway.serving.gateway import Gateway
from gateway.sites.catalog import SiteBundle
from gateway.standards.issuing import applicable as iab_applicable
from gateway.standards.issuing import iab_answer
from gateway.web.answer import AnswerResponse, json_answer
from gateway.web.errors import answer_for, raw_headers
from gateway.web.records import cors_headers, read_body

LONG_CACHE = "public, max-age=86400"  # the URL names the banner version it was built for


def _bundle(gateway: Gateway, site_id: str) -> SiteBundle:
    bundle = gateway.catalog.get(site_id)
    if bundle is None or (bundle.site.tcf is None and bundle.site.gpp is None):
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r} with [tcf] or [gpp]")
    return bundle


async def tcf_script(request: Request) -> Response:
    """The CMP script in the visitor's language (``?lang=``, else Accept-Language)."""
    gateway: Gateway = request.app.state.gateway
    try:
        bundle = _bundle(gateway, request.path_params["site"])
        lang = request.query_params.get("lang")
        if lang is not None and len(lang) > 35:
            raise BadRequest("invalid_parameter", "lang: a BCP 47 tag", field="lang")
        locale = bundle.negotiator.choose(request.headers.get("accept-language"), lang)
        body = gateway.iab.tcf_js(bundle, locale)
    except BadRequest as exc:
        return AnswerResponse(answer_for(exc))
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    current = request.query_params.get("v") == bundle.banner_version
    headers = {
        "ETag": etag,
        "Cache-Control": LONG_CACHE
        if current
        else f"public, max-age={gateway.settings.cache_max_age}",
        "Vary": "Accept-Language",
        "Access-Control-Allow-Origin": "*",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)


def _choices(body: Mapping[str, Any], site: Site) -> dict[str, bool]:
    """``{"choices": {purpose: bool}}`` naming every optional purpose; essentials are on."""
    raw = body.get("choices")
    if not isinstance(raw, dict) or len(raw) > len(site.purposes):
        raise BadRequest("invalid_field", "choices: an object of purpose ids", field="choices")
    out: dict[str, bool] = {}
    for purpose in site.purposes:
        value = True if purpose.essential else raw.get(purpose.id)
        if type(value) is not bool:
            raise BadRequest(
                "missing_choice", f"choices.{purpose.id}: true or false", field="choices"
            )
        out[purpose.id] = value
    unknown = [k for k in raw if site.purpose(k) is None]
    if unknown:
        raise BadRequest(
            "unknown_purpose", f"no purpose {unknown[0][:64]!r}", field="choices", status_code=422
        )
    return out


async def iab_strings(request: Request) -> Response:
    """The strings a recorded choice gives now; nothing is recorded (the choice already is)."""
    gateway: Gateway = request.app.state.gateway
    cors: dict[str, str] = {}
    try:
        bundle = _bundle(gateway, request.path_params["site"])
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        cors = cors_headers(request.headers.get("origin"), own, bundle)
        raw = await read_body(request.receive, request.headers.get("content-length"))
        body = parse_body(raw, request.headers.get("content-type", ""))
        choices = _choices(body, bundle.site)
        visitor = gateway.visitor(request, bundle)
        limits = request.app.state.recording.limits.by_client
        if limits is not None:
            wait = limits.take(client_key(visitor.ip), time.monotonic())
            if wait:
                raise RateLimited("too many requests from this address", retry_after(wait))
        applies = iab_applicable(bundle.site, bundle.gvl, visitor.rule.id, visitor.region)
        if not applies.any:
            raise BadRequest(
                "iab_not_applicable",
                "neither TCF nor GPP applies to this visitor on this site",
                status_code=422,
            )
        gpc = body.get("gpc", False)
        if type(gpc) is not bool:
            raise BadRequest("invalid_field", "gpc: true or false", field="gpc")
        # The browser's own GPC (navigator.globalPrivacyControl) counts like the header: it
        # can only opt the visitor out.
        issued = bundle.issuer.issue(
            applies, choices, visitor.gpc or gpc, visitor.language, time.time_ns() // 100_000_000
        )
    except (BadRequest, Unavailable) as exc:
        return AnswerResponse(answer_for(exc, raw_headers(cors)))
    return AnswerResponse(json_answer(200, iab_answer(issued), raw_headers(cors)))


def routes() -> list[BaseRoute]:
    return [
        Route(paths.TCF_SCRIPT, tcf_script, methods=["GET", "HEAD"]),
        Route(paths.IAB_STRINGS, iab_strings, methods=["POST"]),
    ]
