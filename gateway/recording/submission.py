"""What the recording use case takes in: a consent POST as the HTTP edge read it, and where
the visitor is placed (the serving path's detection, shared so both paths agree)."""

from __future__ import annotations

from typing import NamedTuple, Protocol

from starlette.datastructures import Headers

from gateway.core.model import Region, Rule
from gateway.geo.locator import Locator
from gateway.sites.catalog import LiveCatalog, SiteBundle


class Submission(NamedTuple):
    """One consent POST: the body bytes and the request facts the record is enriched with."""

    body: bytes
    content_type: str
    peer: str | None  # the TCP peer; the client IP is found behind trusted proxies
    headers: Headers  # for locating the visitor: CDN geo headers, X-Forwarded-For
    accept_language: str | None
    gpc_values: list[str]  # every Sec-GPC line
    user_agent: str
    origin: str


class Placement(Protocol):
    """The sites, the locator and the per-site decision (region, GPC, locale, rule).

    The serving path's ``Gateway`` is one; recording sits beside serving, not above it, so
    it names what it needs instead of importing it.
    """

    catalog: LiveCatalog
    locator: Locator

    def decide(
        self, bundle: SiteBundle, region: Region, accept: str | None, gpc_values: list[str]
    ) -> tuple[Region, bool, str, Rule]: ...
