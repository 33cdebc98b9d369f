"""The serving path: visitor context → site → rule → resolved banner → cached response body."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from cachetools import LRUCache
from starlette.datastructures import Headers

from gateway.core import jurisdictions
from gateway.core.errors import BadRequest
from gateway.core.model import Region, ResolvedBanner, Rule
from gateway.core.settings import Settings
from gateway.geo.locator import Locator
from gateway.serving import hosts
from gateway.serving.render import Renderer
from gateway.serving.snippet import Snippet
from gateway.signals.gpc import gpc_requested
from gateway.sites.catalog import LiveCatalog, SiteBundle

MEMO_MAX = 4096
MEMO_TEXT_MAX = 200  # longer Accept-Language values are rare and not remembered
REGION_PARAM = re.compile(r"^([A-Za-z]{2})(?:-([A-Za-z0-9]{1,3}))?$")
Decided = tuple[Region, bool, str, Rule]  # region, GPC, locale, rule


class Visitor(NamedTuple):
    """What the gateway knows about one request's visitor; never part of a cache key but region.

    A named tuple, not a frozen dataclass: one is built per request.
    """

    ip: str | None
    region: Region
    gpc: bool
    language: str  # the negotiated locale identifier, e.g. zh_Hans
    rule: Rule


@dataclass(frozen=True)
class Body:
    """A ready-to-send response body with its validator."""

    content: bytes
    etag: str
    media_type: str
    public: bool  # cacheable by shared caches (region came from a header or the URL)


def config_document(resolved: ResolvedBanner, visitor: Visitor, record_url: str) -> dict[str, Any]:
    """The JSON config: the cached resolved banner plus this request's region and signals."""
    return {
        **resolved.config,
        "region": visitor.region.as_json(),
        "gpc": visitor.gpc,
        "gpc_applied": resolved.gpc_applied,
        "record_url": record_url,
    }


def snippet_document(resolved: ResolvedBanner, visitor: Visitor, record_url: str) -> dict[str, Any]:
    """The config inlined in consent.js: the JSON config plus the rendered layers."""
    document = config_document(resolved, visitor, record_url)
    document["html"] = {"banner": resolved.html, "preferences": resolved.preferences_html}
    return document


def parse_region_param(value: str) -> Region:
    match = REGION_PARAM.match(value)
    if not match:
        raise BadRequest(
            "invalid_parameter",
            "region: expected an ISO 3166 code such as DE or US-CA",
            field="region",
        )
    country, sub = match.group(1).upper(), match.group(2)
    return Region(country=country, subdivision=sub.upper() if sub else None, source="query")


class Gateway:
    """Shared serving state: catalog, locator, renderer, and a cache of finished bodies."""

    def __init__(
        self,
        settings: Settings,
        catalog: LiveCatalog,
        locator: Locator,
        renderer: Renderer,
        snippet: Snippet,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.locator = locator
        self.renderer = renderer
        self.snippet = snippet
        self._bodies: LRUCache[tuple[Any, ...], Body] = LRUCache(16384)
        # Finished answers keyed by the raw inputs that decide them (never by IP or subject).
        self._visitors: dict[tuple[Any, ...], tuple[SiteBundle, Decided]] = {}
        self.answers: dict[tuple[Any, ...], tuple[int, list[tuple[bytes, bytes]], bytes]] = {}
        self.vary = ", ".join(["Accept-Language", "Sec-GPC", *locator.geo_header_names])
        self.public_hosts = hosts.public_hosts(settings)
        self.max_age = str(settings.cache_max_age).encode()

    def visitor(self, request: Any, bundle: SiteBundle) -> Visitor:
        """Detect region, language, GPC and the rule for a Starlette request."""
        peer = request.client.host if request.client else None
        ip, region = self.locator.locate(peer, request.headers)
        return self.visitor_from(bundle, ip, region, request.headers, request.query_params)

    def visitor_from(
        self,
        bundle: SiteBundle,
        ip: str | None,
        region: Region,
        headers: Headers,
        params: Mapping[str, str],
    ) -> Visitor:
        """Language, GPC and the rule for a located visitor; `?region=` overrides detection."""
        located, gpc, locale, rule = self.decide(
            bundle,
            region,
            headers.get("accept-language"),
            headers.getlist("sec-gpc"),
            params.get("lang"),
            params.get("region"),
        )
        return Visitor(ip=ip, region=located, gpc=gpc, language=locale, rule=rule)

    def decide(
        self,
        bundle: SiteBundle,
        region: Region,
        accept: str | None,
        gpc_values: list[str],
        lang: str | None = None,
        raw_region: str | None = None,
    ) -> Decided:
        """The region (after `?region=`), GPC, locale and rule for these raw inputs.

        A pure function of (site bundle, region, Accept-Language, Sec-GPC, ?lang=, ?region=)
        and few combinations occur, so answers are remembered per bundle (a reload makes a
        new bundle). Unusually long inputs are decided afresh so they cannot fill the memo
        with big keys; errors are never remembered.
        """
        key: tuple[Any, ...] | None = None
        if len(accept or "") <= MEMO_TEXT_MAX and len(gpc_values) <= 1:
            key = (id(bundle), region, accept, lang, raw_region, *gpc_values)
            hit = self._visitors.get(key)
            if hit is not None and hit[0] is bundle:
                return hit[1]
        if raw_region is not None:
            region = parse_region_param(raw_region)
        locale = bundle.negotiator.choose(accept, lang)
        gpc = gpc_requested(gpc_values)
        rule = jurisdictions.rule_for(region, bundle.site.rule_overrides)
        decided: Decided = (region, gpc, locale, rule)
        if key is not None:
            if len(self._visitors) >= MEMO_MAX:
                self._visitors.clear()  # a crude bound, but O(1) on the hot path
            self._visitors[key] = (bundle, decided)
        return decided

    def resolve(self, bundle: SiteBundle, visitor: Visitor) -> ResolvedBanner:
        return self.renderer.resolve(bundle, visitor.rule, visitor.language, visitor.gpc)

    def record_url(self, scheme: str, host: str | None, site_id: str) -> str:
        """Where the snippet posts choices: the public URL, or this request's Host if it is a
        configured public host, else a path on the gateway's own origin (gateway/serving/
        hosts.py)."""
        base = hosts.base_url(self.settings, self.public_hosts, scheme, host)
        return f"{base}/v1/sites/{site_id}/consents"

    def body(self, kind: str, bundle: SiteBundle, visitor: Visitor, record_url: str) -> Body:
        """The finished body for config, banner or consent.js, cached per region and signal."""
        resolved = self.resolve(bundle, visitor)
        region = visitor.region
        key = (
            kind,
            bundle.site.id,
            bundle.banner_version,
            id(resolved),
            region.code,
            region.source,
            visitor.gpc,
            record_url,
        )
        cached = self._bodies.get(key)
        if cached is not None:
            return cached
        if kind == "banner":
            content = resolved.html.encode()
            media_type = "text/html; charset=utf-8"
        elif kind == "config":
            content = orjson.dumps(config_document(resolved, visitor, record_url))
            media_type = "application/json"
        else:
            content = self.snippet.assemble(snippet_document(resolved, visitor, record_url))
            media_type = "text/javascript; charset=utf-8"
        etag = '"' + hashlib.blake2b(content, digest_size=12).hexdigest() + '"'
        body = Body(content, etag, media_type, public=region.source in ("header", "query"))
        self._bodies[key] = body
        return body

    def clear(self) -> None:
        self._visitors.clear()
        self.answers.clear()
        self._bodies.clear()
        self.renderer.clear()
