"""Rights request endpoints: the subject's (make, verify, follow, download), the downstream
systems' signed confirmations, and the admin queue (API and a page).

Thin handlers: parse and authenticate here, then one call into the rights service
(gateway/rights/service.py). Errors are the app's typed errors, rendered by its handlers.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson
from cachetools import LRUCache
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.core.errors import BadRequest, ConfigError, NotFound, Unavailable
from gateway.core.model import Region
from gateway.core.preference_model import PreferenceModel
from gateway.preferences import identities
from gateway.preferences.identities import Identity
from gateway.preferences.service import PreferenceService, check_subject
from gateway.recording.consent import RecordContext, validate
from gateway.recording.receipts import InvalidReceipt
from gateway.recording.service import RecordingService
from gateway.rights import kinds
from gateway.rights.policy import SiteRights, load_policies, site_rights
from gateway.rights.service import NewRequest, RightsService, Verification
from gateway.sites.catalog import SiteBundle
from gateway.web.api import read_json
from gateway.web.auth import authorize

MAX_CALLBACK = 16 * 1024
MAX_REASON = 1000
_SUBDIVISION = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")


def _json(data: Any, status: int = 200) -> Response:
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


def _bundle(request: Request) -> SiteBundle:
    site_id = request.path_params["site"]
    bundle: SiteBundle | None = request.app.state.gateway.catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    return bundle


def _service(request: Request) -> RightsService:
    service: RightsService = request.app.state.rights
    return service


def _base_url(request: Request) -> str:
    public: str = request.app.state.settings.public_url
    return public.rstrip("/") or str(request.base_url).rstrip("/")


def _bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _string(body: Mapping[str, Any], key: str, limit: int, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest("invalid_field", f"a string of at most {limit} characters", field=key)
    return value


def _region(text: str) -> Region:
    code = text.strip().upper()
    if not _SUBDIVISION.match(code):
        raise BadRequest("invalid_field", "an ISO 3166 code such as DE or US-CA", field="region")
    country, _, sub = code.partition("-")
    return Region(country, sub or None, "header")


async def _details(
    service: PreferenceService, site: str, model: PreferenceModel, type_: str, raw: Any
) -> dict[str, Any]:
    """Only a correction carries details: identities to unlink and link, stored hashed."""
    if raw is None or raw == {}:
        if type_ == "correction":
            raise BadRequest(
                "invalid_field", 'a correction needs {"unlink": [...], "link": [...]}',
                field="details",
            )  # fmt: skip
        return {}
    if type_ != "correction" or not isinstance(raw, dict):
        raise BadRequest("invalid_field", "only a correction takes details", field="details")
    for key in raw:
        if key not in ("unlink", "link"):
            raise BadRequest("unknown_field", "details takes unlink and link", field="details")
    out: dict[str, Any] = {"unlink_hashes": [], "link_hashes": []}
    for key in ("unlink", "link"):
        items = raw.get(key, [])
        if not isinstance(items, list) or len(items) > 10:
            raise BadRequest("invalid_field", "a list of at most 10 identities", field=key)
        found = [identities.from_json(model, i, f"details.{key}[{n}]") for n, i in enumerate(items)]
        hashes = await service.hashes(site, found)
        if key == "unlink":
            out["unlink_hashes"] = hashes
        else:
            out["link_hashes"] = [[i.type, h] for i, h in zip(found, hashes, strict=True)]
    return out


async def create_request(request: Request) -> Response:
    bundle = _bundle(request)
    site = bundle.site
    state = request.app.state
    rights = state.site_rights(site.id)
    body = await read_json(
        request, {"type", "subject_id", "identity", "details", "language", "receipt", "region"}
    )
    type_ = body.get("type")
    if type_ not in kinds.TYPES:
        raise BadRequest("invalid_field", f"type is one of {', '.join(kinds.TYPES)}", field="type")
    language = _string(body, "language", 35, site.default_locale)
    prefs: PreferenceService = state.preferences
    model = site.preferences
    given_subject = body.get("subject_id")
    if given_subject is not None and not isinstance(given_subject, str):
        raise BadRequest("invalid_field", "a string", field="subject_id")
    bearer = _bearer(request)
    receipt = _string(body, "receipt", 1024) or (bearer if bearer.startswith("v1.") else "")
    identity: Identity | None = None
    if body.get("identity") is not None:
        identity = identities.from_json(model, body["identity"], "identity")
    gateway = state.gateway
    _ip, region = gateway.locator.locate(
        request.client.host if request.client else None, request.headers
    )
    if bearer.startswith("cgk_"):
        key = await prefs.auth.authenticate(request.headers.get("authorization"), site.id,
                                            "records:write")  # fmt: skip
        if body.get("region") is not None:  # staff know where the customer lives
            region = _region(_string(body, "region", 10))
        if given_subject is not None:
            subjects: tuple[str, ...] = (check_subject(given_subject),)
        elif identity is not None:
            subjects = tuple(await prefs.subjects_for(site.id, identity))
        else:
            raise BadRequest("invalid_field", "give subject_id or identity", field="subject_id")
        hashes = await prefs.hashes(site.id, [identity]) if identity else [None]
        verification = Verification(
            "api_key", f"api_key:{key.key_id}", subjects,
            identity.type if identity else None, hashes[0],
        )  # fmt: skip
    elif receipt:
        claims = request.app.state.recording.receipts.verify(receipt)
        if claims.site != site.id or (given_subject not in (None, claims.subject_id)):
            # The same answer as a forged receipt: nothing about the other subject.
            raise InvalidReceipt("the receipt does not match this site and subject")
        verification = Verification("receipt", "subject", (claims.subject_id,))
    elif identity is not None:
        if body.get("region") is not None:
            raise BadRequest("invalid_field", "the region is detected", field="region")
        if identity.type != "email":
            raise BadRequest(
                "unverifiable_identity",
                "without a receipt or an API key, only an e-mail address can be verified "
                "(a code is sent to it)",
                field="identity.type",
                status_code=422,
            )
        if not state.settings.smtp_url:
            # Said before anything is stored: a request nobody can verify would only expire.
            raise BadRequest(
                "email_verification_off",
                "this gateway sends no e-mail (GATEWAY_SMTP_URL is empty); use the privacy "
                "center with your receipt, or contact the site",
                status_code=503,
            )
        (digest,) = await prefs.hashes(site.id, [identity])
        verification = Verification(
            "email", "subject", (), identity.type, digest, email=identity.value
        )
    else:
        raise BadRequest(
            "credential_required",
            "send the subject's receipt, an e-mail identity (verified by a code), or a site "
            "API key",
            status_code=401,
        )
    if verification.method != "api_key" and body.get("region") is not None:
        raise BadRequest("invalid_field", "the region is detected", field="region")
    region, _gpc, locale, rule = gateway.decide(
        bundle, region, request.headers.get("accept-language"), []
    )
    details = await _details(prefs, site.id, model, type_, body.get("details"))
    new = NewRequest(
        site=site.id,
        site_name=site.name,
        rights=rights,
        rule_id=rule.id,
        region={"country": region.country, "subdivision": region.subdivision},
        type=type_,
        verification=verification,
        details=details,
        language=language or locale,
    )
    service = _service(request)
    stored, token = await service.create(new)
    view = await service.view(stored, _base_url(request))
    return _json({**view, "token": token}, 202)


async def verify_request(request: Request) -> Response:
    _bundle(request)
    body = await read_json(request, {"code"})
    code = _string(body, "code", 32)
    service = _service(request)
    request_id, token = request.path_params["request_id"], _bearer(request)
    if (await service.authorized(request_id, token)).site != request.path_params["site"]:
        raise NotFound("unknown_request", "no request with this id and token")
    stored = await service.verify(request_id, token, code)
    return _json(await service.view(stored, _base_url(request)))


async def get_request(request: Request) -> Response:
    _bundle(request)
    service = _service(request)
    stored = await service.authorized(request.path_params["request_id"], _bearer(request))
    if stored.site != request.path_params["site"]:
        raise NotFound("unknown_request", "no request with this id and token")
    return _json(await service.view(stored, _base_url(request)))


async def download(request: Request) -> Response:
    bundle = _bundle(request)
    service = _service(request)
    stored, data = await service.download(
        bundle.site.id,
        request.path_params["request_id"],
        request.query_params.get("expires", ""),
        request.query_params.get("signature", ""),
    )
    name = f"{bundle.site.id}-{stored.type}-{stored.request_id[:8]}.zip"
    return Response(
        data,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


async def system_callback(request: Request) -> Response:
    raw = bytearray()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_CALLBACK:
        raise BadRequest("body_too_large", f"body exceeds {MAX_CALLBACK} bytes", status_code=413)
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_CALLBACK:
                raise BadRequest(
                    "body_too_large", f"body exceeds {MAX_CALLBACK} bytes", status_code=413
                )
    except ClientDisconnect as exc:
        raise BadRequest("client_disconnected", "the client went away mid-body") from exc
    headers: Headers = request.headers
    service = _service(request)
    stored = await service.confirm(
        request.path_params["request_id"],
        request.path_params["system"],
        request.app.state.site_rights,
        headers.get("x-consent-timestamp", ""),
        headers.get("x-consent-signature", ""),
        bytes(raw),
    )
    return _json({"request_id": stored.request_id, "accepted": True})


# -- admin ------------------------------------------------------------------------------------


def _admin_filters(request: Request) -> tuple[str | None, list[str] | None, bool, int]:
    q = request.query_params
    type_ = q.get("type") or None
    if type_ is not None and type_ not in kinds.TYPES:
        raise BadRequest("invalid_parameter", f"type: {', '.join(kinds.TYPES)}", field="type")
    states = [s for s in q.getlist("state") if s] or None
    for s in states or []:
        if s not in kinds.STATES:
            raise BadRequest("invalid_parameter", f"state: {', '.join(kinds.STATES)}",
                             field="state")  # fmt: skip
    overdue = q.get("overdue", "").lower() in ("1", "true", "yes")
    limit_text = q.get("limit", "100")
    if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= 500:
        raise BadRequest("invalid_parameter", "limit: 1-500", field="limit")
    return type_, states, overdue, int(limit_text)


async def admin_list(request: Request) -> Response:
    authorize(request)
    bundle = _bundle(request)
    type_, states, overdue, limit = _admin_filters(request)
    service = _service(request)
    found = await service.listing(bundle.site.id, type_, states, overdue, limit)
    return _json(
        {
            "requests": [
                {
                    "request_id": r.request_id,
                    "type": r.type,
                    "state": r.state,
                    "received_at": r.received_at,
                    "due_at": r.due_at,
                    "overdue": service.is_overdue(r),
                    "verification": r.verification,
                    "rule_id": r.rule_id,
                    "gateway_done": r.gateway_done_at is not None,
                }
                for r in found
            ]
        }
    )


async def admin_show(request: Request) -> Response:
    authorize(request)
    bundle = _bundle(request)
    service = _service(request)
    stored = await service.get(request.path_params["request_id"], bundle.site.id)
    return _json(await service.detail(stored))


async def admin_action(request: Request) -> Response:
    authorize(request)
    bundle = _bundle(request)
    action = request.path_params["action"]
    if action not in ("complete", "deny", "extend"):
        raise NotFound("not_found", "actions: complete, deny, extend")
    body = await read_json(request, {"reason"})
    reason = _string(body, "reason", MAX_REASON)
    service = _service(request)
    stored = await service.get(request.path_params["request_id"], bundle.site.id)
    if action == "complete":
        stored = await service.complete(stored, reason, "admin")
    elif action == "deny":
        stored = await service.deny(stored, reason, "admin")
    else:
        stored = await service.extend(stored, request.app.state.site_rights(bundle.site.id),
                                      reason, "admin")  # fmt: skip
    return _json(await service.detail(stored))


async def admin_page(request: Request) -> Response:
    """The queue as a page: the same data as the API, escaped, no script."""
    authorize(request)
    catalog = request.app.state.gateway.catalog
    site_id = request.query_params.get("site") or ""
    if site_id and catalog.get(site_id) is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    type_, states, overdue, limit = _admin_filters(request)
    service = _service(request)
    found = await service.listing(site_id or None, type_, states, overdue, limit)
    e = html.escape
    rows = "".join(
        f"<tr class={'overdue' if service.is_overdue(r) else 'ok'}><td>{e(r.site)}</td>"
        f"<td><code>{e(r.request_id)}</code></td><td>{e(r.type)}</td><td>{e(r.state)}</td>"
        f"<td>{e(r.received_at[:16])}</td><td>{e(r.due_at[:16])}</td>"
        f"<td>{'overdue' if service.is_overdue(r) else ''}</td><td>{e(r.reason)}</td></tr>"
        for r in found
    )
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Rights requests</title>"
        "<style>body{font:14px system-ui;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}.overdue{background:#fde2e1}</style>"
        f"<h1>Rights requests{(' — ' + e(site_id)) if site_id else ''}</h1>"
        "<p>Filter with ?site=, ?type=, ?state=, ?overdue=1. Act through "
        "POST /admin/v1/sites/{site}/rights-requests/{id}/complete|deny|extend or "
        "<code>consent-gateway rights</code>.</p>"
        "<table><tr><th>site</th><th>request</th><th>type</th><th>state</th><th>received</th>"
        f"<th>due</th><th></th><th>reason</th></tr>{rows}</table>"
    )
    return HTMLResponse(
        page,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )


def routes() -> list[BaseRoute]:
    base = "/v1/sites/{site}/rights-requests"
    admin = "/admin/v1/sites/{site}/rights-requests"
    return [
        Route(base, create_request, methods=["POST"]),
        Route(f"{base}/{{request_id}}", get_request, methods=["GET"]),
        Route(f"{base}/{{request_id}}/verify", verify_request, methods=["POST"]),
        Route(f"{base}/{{request_id}}/download", download, methods=["GET"]),
        Route(
            "/v1/rights-requests/{request_id}/systems/{system}", system_callback, methods=["POST"]
        ),
        Route(admin, admin_list, methods=["GET"]),
        Route(f"{admin}/{{request_id}}", admin_show, methods=["GET"]),
        Route(f"{admin}/{{request_id}}/{{action}}", admin_action, methods=["POST"]),
        Route("/admin/rights", admin_page, methods=["GET"]),
    ]
