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

from gateway.core import paths
from gateway.core.errors import BadRequest
from gateway.core.impressions import ImpressionKey, Impressions
from gateway.core.model import Region, ResolvedBanner, Rule
from gateway.core.purposes import is_minor
from gateway.core.settings import Settings
from gateway.geo.locator import Locator
from gateway.serving import encodings, hosts, parts
from gateway.serving.encodings import Variant
from gateway.serving.iab import IabScripts, iab_config
from gateway.serving.memo import BoundedMemo
from gateway.serving.render import Renderer
from gateway.serving.snippet import Snippet
from gateway.signals.gpc import gpc_requested
from gateway.sites.catalog import LiveCatalog, SiteBundle, static_dir

MEMO_MAX = 4096
MEMO_TEXT_MAX = 200  # longer Accept-Language values are rare and not remembered
AGE_PARAM = re.compile(r"[0-9]|[1-9][0-9]|1[0-2][0-9]|130")
REGION_PARAM = re.compile(r"^([A-Za-z]{2})(?:-([A-Za-z0-9]{1,3}))?$")
Decided = tuple[Region, bool, str, Rule]  # region, GPC, locale, rule
# Finished answers (status, raw headers, body) with their ETag: the ETag, the 200, the 304.
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
Encoded = tuple[str, Answer, Answer]
# …one per content coding (identity, gzip, br), and the impression key the answer counts
# under (gateway/core/impressions.py).
CachedAnswer = tuple[dict[str, Encoded], ImpressionKey | None]
# Outside input picks the keys of these two caches (Host, Accept-Language, region, ?lang=),
# so each is bounded by bytes as well as entries (security review §5: 16,384 entries of
# unbounded size took a process to 1.6 GB). Legitimate traffic fits: a config is ~3 KB,
# consent.js ~17 KB, and only the combinations visitors actually send are remembered.
ANSWERS_MAX_ENTRIES = 16384
ANSWERS_MAX_BYTES = 32 << 20
BODIES_MAX_BYTES = 32 << 20
BODY_OVERHEAD = 512  # counted per cached body beside its content: key, ETag, object


class Visitor(NamedTuple):
    """What the gateway knows about one request's visitor; never part of a cache key but region.

    A named tuple, not a frozen dataclass: one is built per request.
    """

    ip: str | None
    region: Region
    gpc: bool
    language: str  # the negotiated locale identifier, e.g. zh_Hans
    rule: Rule
    age: int | None = None  # the site's age signal (?age=), when it knows the visitor's age


@dataclass(frozen=True)
class Body:
    """A ready-to-send response body with its validator, and its compressed variants."""

    content: bytes
    etag: str
    media_type: str
    public: bool  # cacheable by shared caches (region came from a header or the URL)
    # identity, gzip, br (the last two where they are smaller): gateway/serving/encodings.py
    variants: dict[str, Variant]

    @property
    def size(self) -> int:
        """The bytes this body holds in memory, every variant counted."""
        return sum(len(v.content) for v in self.variants.values())


def config_document(resolved: ResolvedBanner, visitor: Visitor, record_url: str) -> dict[str, Any]:
    """The JSON config: the cached resolved banner plus this request's region and signals."""
    return {
        **resolved.config,
        "region": visitor.region.as_json(),
        "gpc": visitor.gpc,
        "gpc_applied": resolved.gpc_applied,
        # GDPR Art. 8(1): the national figure where the visitor is (also for outermost regions
        # and Åland, and under site overrides that keep it), else the rule's own.
        "age_of_consent": visitor.rule.age_for(visitor.region.country),
        "record_url": record_url,
    }


def snippet_document(
    resolved: ResolvedBanner,
    visitor: Visitor,
    record_url: str,
    state_check: int = Settings.state_check_interval,
) -> dict[str, Any]:
    """The config inlined in consent.js: the JSON config plus the rendered first layer, the
    query that fetches its lazily loaded parts (gateway/serving/parts.py) for the same locale,
    region and age, and how long (seconds) the cookie's copy of the server's state is trusted
    (``GATEWAY_STATE_CHECK_INTERVAL``)."""
    document = config_document(resolved, visitor, record_url)
    document["state_check"] = state_check
    document["html"] = {"banner": resolved.html}
    document["part"] = parts.part_query(
        str(resolved.config.get("language", "")), visitor.region.code, visitor.age
    )
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


def parse_age_param(value: str | None) -> int | None:
    """``?age=``: the visitor's age in whole years, when the site knows it (0-130), or None."""
    if value is None:
        return None
    if not AGE_PARAM.fullmatch(value):
        raise BadRequest(
            "invalid_parameter",
            "age: expected the visitor's age in whole years, 0 to 130",
            field="age",
        )
    return int(value)


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
        # Every encoding of a body counts against the bound.
        self._bodies: LRUCache[tuple[Any, ...], Body] = LRUCache(
            BODIES_MAX_BYTES, getsizeof=lambda body: body.size + BODY_OVERHEAD
        )
        self._visitors: dict[tuple[Any, ...], tuple[SiteBundle, Decided]] = {}
        # Finished answers keyed by normalized inputs that decide them (never by IP or
        # subject, never by a raw query string or If-None-Match): gateway/web/public.py.
        self.impressions = Impressions()
        self.answers: BoundedMemo[tuple[Any, ...], CachedAnswer] = BoundedMemo(
            ANSWERS_MAX_ENTRIES, ANSWERS_MAX_BYTES
        )
        # The record URL's base when one is configured; otherwise each request's Host.
        self.public_base = settings.public_url.rstrip("/")
        self.vary = ", ".join(
            ["Accept-Encoding", "Accept-Language", "Sec-GPC", *locator.geo_header_names]
        )
        self.public_hosts = hosts.public_hosts(settings)
        self.max_age = str(settings.cache_max_age).encode()
        self.iab = IabScripts(static_dir())

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
        age = parse_age_param(params.get("age"))
        return Visitor(ip=ip, region=located, gpc=gpc, language=locale, rule=rule, age=age)

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
        rule = bundle.rules.rule(region)
        decided: Decided = (region, gpc, locale, rule)
        if key is not None:
            if len(self._visitors) >= MEMO_MAX:
                self._visitors.clear()  # a crude bound, but O(1) on the hot path
            self._visitors[key] = (bundle, decided)
        return decided

    def resolve(self, bundle: SiteBundle, visitor: Visitor) -> ResolvedBanner:
        minor = is_minor(visitor.rule, visitor.age)
        return self.renderer.resolve(bundle, visitor.rule, visitor.language, visitor.gpc, minor)

    def base_url(self, scheme: str, host: str | None) -> str:
        """Where the public API is reached: the configured public URL, this request's Host if
        it is a configured public host, else "" (a path on the gateway's own origin; see
        gateway/serving/hosts.py)."""
        return hosts.base_url(self.settings, self.public_hosts, scheme, host)

    def record_url(self, scheme: str, host: str | None, site_id: str) -> str:
        """Where the snippet posts choices."""
        return self.base_url(scheme, host) + paths.url(paths.CONSENTS, site=site_id)

    def bodies_bytes(self) -> int:
        """What the cache of finished bodies holds, as counted against BODIES_MAX_BYTES."""
        return int(self._bodies.currsize)

    def body(self, kind: str, bundle: SiteBundle, visitor: Visitor, record_url: str) -> Body:
        """The finished body for config, banner, consent.js or a part (``part:<name>``),
        cached per region and signal with its gzip and brotli variants."""
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
        # TCF/GPP where the site's [tcf]/[gpp] apply to the visitor; None (nothing) elsewhere.
        iab = None if kind == "banner" else self.iab_config(bundle, visitor)
        if kind == "banner":
            content = resolved.html.encode()
            media_type = "text/html; charset=utf-8"
        elif kind == "config":
            document = config_document(resolved, visitor, record_url)
            content = orjson.dumps(document if iab is None else {**document, "iab": iab})
            media_type = "application/json"
        elif kind.startswith("part:") and kind[5:] in parts.SCRIPTS:
            content = parts.SCRIPTS[kind[5:]](self.snippet)
            media_type = "text/javascript; charset=utf-8"
        elif kind.startswith("part:"):
            content = orjson.dumps(parts.part_document(kind[5:], resolved, self.snippet))
            media_type = "application/json"
        else:
            document = snippet_document(
                resolved, visitor, record_url, self.settings.state_check_interval
            )
            content = self.snippet.assemble(document if iab is None else {**document, "iab": iab})
            if iab is not None:
                content += self.iab.stub()
            media_type = "text/javascript; charset=utf-8"
        etag = '"' + hashlib.blake2b(content, digest_size=12).hexdigest() + '"'
        # A script part is the same for everyone; the rest varies by region and signal.
        public = region.source in ("header", "query") or kind.removeprefix("part:") in parts.SCRIPTS
        body = Body(content, etag, media_type, public, encodings.compress(content, etag))
        self._bodies[key] = body
        return body

    def iab_config(self, bundle: SiteBundle, visitor: Visitor) -> dict[str, Any] | None:
        if bundle.site.tcf is None and bundle.site.gpp is None:
            return None
        return iab_config(bundle, visitor.rule.id, visitor.region, visitor.gpc, visitor.language)

    def clear(self) -> None:
        self._visitors.clear()
        self.answers.clear()
        self._bodies.clear()
        self.renderer.clear()
