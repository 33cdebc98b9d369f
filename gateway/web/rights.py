"""The rights service in the app: wiring it to the recording and preferences services, each
site's rights settings, and the lookups the rights endpoints share (gateway/web/rights_public.py,
gateway/web/rights_admin.py).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

import orjson
from cachetools import LRUCache
from starlette.requests import Request
from starlette.responses import Response

from gateway.core.errors import BadRequest, ConfigError, NotFound, Unavailable
from gateway.core.model import Region
from gateway.recording.consent import RecordContext, validate
from gateway.recording.service import RecordingService
from gateway.rights.limits import RightsLimits
from gateway.rights.policy import SiteRights, load_policies, site_rights
from gateway.rights.service import RightsService
from gateway.sites.catalog import SiteBundle

MAX_REASON = 1000


def json_response(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data), status, {"Cache-Control": "no-store"}, media_type="application/json"
    )


class RecordsAdapter:
    """The recording service as the rights service reads and writes it."""

    def __init__(self, recording: RecordingService, catalog: Any) -> None:
        self.recording = recording
        self.catalog = catalog

    async def record_choice(
        self, site_id: str, subject_id: str, kind: str, region: Mapping[str, Any], key: str
    ) -> str | None:
        """Record a withdrawal of every consent, or an opt-out of sale and sharing (the other
        choices kept), as a consent record on the subject's behalf; its record id, or None
        when the site is gone. ``key`` makes a retry of the same request a no-op."""
        bundle: SiteBundle | None = self.catalog.get(site_id)
        if bundle is None:
            return None
        site = bundle.site
        current = (await self.recording.history(site_id, subject_id)).get("current") or {}
        before = current.get("choices", {})
        choices = {
            p.id: False if kind == "withdraw" or p.sale_or_share else bool(before.get(p.id, False))
            for p in site.optional_purposes
        }
        on = list(choices.values())
        action = (
            "withdraw" if kind == "withdraw" else "accept_all" if all(on)
            else "custom" if any(on) else "reject_all"
        )  # fmt: skip
        consent = validate(
            {
                "subject_id": subject_id, "banner_version": bundle.banner_version,
                "action": action, "choices": choices, "channel": "api",
                "idempotency_key": key,
            },
            site,
            bundle.known_versions,
        )  # fmt: skip
        where = Region(region.get("country"), region.get("subdivision"), "unknown")
        context = RecordContext(
            ip=None, region=where, rule=bundle.rules.rule(where), gpc=False, user_agent="",
            origin="", language=site.default_locale, consent_revision=bundle.consent_revision,
        )  # fmt: skip
        appended = await self.recording.record(consent, context)
        return str(appended.record_id)

    async def history(self, site: str, subject_id: str) -> dict[str, Any]:
        return await self.recording.history(site, subject_id)

    async def banner_version(self, site_id: str, banner_version: str) -> dict[str, Any] | None:
        return await self.recording.banner_version(site_id, banner_version)

    def settled_before(self, moment: dt.datetime) -> bool:
        # The oldest undelivered record was appended after ``moment``: every record taken
        # before the request is in the store, where erasure reaches it.
        age = self.recording.outbox.oldest_age()
        return age is None or time.time() - age > moment.timestamp()


class SiteRightsCache:
    """Each site's rights settings, parsed once per banner version (bounded by site count)."""

    def __init__(self, catalog: Any) -> None:
        self.catalog = catalog
        self.base = load_policies()
        self._cache: LRUCache[tuple[str, str], SiteRights] = LRUCache(maxsize=1024)

    def __call__(self, site_id: str) -> SiteRights | None:
        bundle: SiteBundle | None = self.catalog.get(site_id)
        if bundle is None:
            return None
        key = (site_id, bundle.banner_version)
        found = self._cache.get(key)
        if found is None:
            try:
                found = site_rights(self.base, bundle.site.rights, f"{site_id}/site.toml [rights]")
            except ConfigError as exc:
                raise Unavailable(f"the site's rights settings are invalid: {exc}") from exc
            self._cache[key] = found
        return found


def wire(state: Any, rights: RightsService) -> None:
    """Connect the rights service to the app's other services (in the lifespan)."""
    rights.records = RecordsAdapter(state.recording, state.gateway.catalog)
    rights.states = state.preferences
    rights.rights_for = state.site_rights = SiteRightsCache(state.gateway.catalog)
    worker = state.recording.worker  # the node's limits under workers
    state.rights_limits = RightsLimits(state.settings, shared=worker.limits if worker else None)


def site_bundle(request: Request) -> SiteBundle:
    site_id = request.path_params["site"]
    bundle: SiteBundle | None = request.app.state.gateway.catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    return bundle


def rights_service(request: Request) -> RightsService:
    service: RightsService = request.app.state.rights
    return service


def _base_url(request: Request) -> str:
    public: str = request.app.state.settings.public_url
    return public.rstrip("/") or str(request.base_url).rstrip("/")


def bearer_of(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def string_field(body: Mapping[str, Any], key: str, limit: int, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest("invalid_field", f"a string of at most {limit} characters", field=key)
    return value
