"""The subject's rights endpoints (make, verify, follow, download a request) and the downstream
systems' signed confirmations.

Thin handlers: parse and authenticate here, then one call into the rights service
(gateway/rights/service.py). Errors are the app's typed errors, rendered by its handlers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.core.errors import BadRequest, NotFound, Unavailable
from gateway.core.i18n import bcp47, direction
from gateway.core.model import Region
from gateway.core.preference_model import PreferenceModel
from gateway.preferences import identities
from gateway.preferences.identities import Identity
from gateway.preferences.service import PreferenceService, check_subject
from gateway.recording.receipts import InvalidReceipt
from gateway.rights import kinds
from gateway.rights.limits import RightsLimits
from gateway.rights.service import NewRequest, Verification
from gateway.sites.catalog import SiteBundle
from gateway.sites.texts import EMAIL_TEXTS
from gateway.web.answer import AnswerResponse
from gateway.web.api import read_json
from gateway.web.errors import answer_for, raw_headers
from gateway.web.records import cors_for, preflight
from gateway.web.rights import bearer_of, json_response, rights_service, site_bundle, string_field

MAX_CALLBACK = 16 * 1024
_SUBDIVISION = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")


Handler = Callable[[Request], Awaitable[Response]]


def with_cors(handler: Handler) -> Handler:
    """The recording API's CORS for a subject's endpoint: an Origin among the site's
    ``allowed_origins`` (or the gateway's own, the privacy center) gets
    Access-Control-Allow-Origin on every answer, errors and 429s included; any other Origin
    gets 403. Never Access-Control-Allow-Credentials: requests carry their token or receipt
    in Authorization, not in cookies."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        cors: dict[str, str] = {}
        try:
            cors = cors_for(request, site_bundle(request))
            response = await handler(request)
        except (BadRequest, Unavailable) as exc:
            return AnswerResponse(answer_for(exc, raw_headers(cors)))
        response.headers.update(cors)
        return response

    return endpoint


def _base_url(request: Request) -> str:
    public: str = request.app.state.settings.public_url
    return public.rstrip("/") or str(request.base_url).rstrip("/")


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
    bundle = site_bundle(request)
    site = bundle.site
    state = request.app.state
    rights = state.site_rights(site.id)
    gateway = state.gateway
    ip, region = gateway.locator.locate(
        request.client.host if request.client else None, request.headers
    )
    bearer = bearer_of(request)
    limits: RightsLimits = state.rights_limits
    if not bearer.startswith("cgk_"):  # staff (site API keys) file requests for many people
        limits.client(ip)
    body = await read_json(
        request, {"type", "subject_id", "identity", "details", "language", "receipt", "region"}
    )
    type_ = body.get("type")
    if type_ not in kinds.TYPES:
        raise BadRequest("invalid_field", f"type is one of {', '.join(kinds.TYPES)}", field="type")
    language = string_field(body, "language", 35, site.default_locale)
    prefs: PreferenceService = state.preferences
    model = site.preferences
    given_subject = body.get("subject_id")
    if given_subject is not None and not isinstance(given_subject, str):
        raise BadRequest("invalid_field", "a string", field="subject_id")
    receipt = string_field(body, "receipt", 1024) or (bearer if bearer.startswith("v1.") else "")
    identity: Identity | None = None
    if body.get("identity") is not None:
        identity = identities.from_json(model, body["identity"], "identity")
    if bearer.startswith("cgk_"):
        key = await prefs.auth.authenticate(request.headers.get("authorization"), site.id,
                                            "records:write")  # fmt: skip
        if body.get("region") is not None:  # staff know where the customer lives
            region = _region(string_field(body, "region", 10))
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
    accept = request.headers.get("accept-language")
    region, _gpc, locale, rule = gateway.decide(bundle, region, accept, [])
    details = await _details(prefs, site.id, model, type_, body.get("details"))
    limits.subject(site.id, verification.identity_hash or ",".join(verification.subject_ids))
    if verification.method == "email":
        limits.code(ip, site.id, verification.identity_hash or "")
    mail_locale = _mail_locale(bundle, accept, body.get("language"))
    gettext = bundle.translations.get(mail_locale).gettext
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
        mail_texts={key: gettext(msgid) for key, msgid in EMAIL_TEXTS.items()},
        mail_language=bcp47(mail_locale),
        mail_direction=direction(mail_locale),
    )
    service = rights_service(request)
    stored, token = await service.create(new)
    view = await service.view(stored, _base_url(request))
    return json_response({**view, "token": token}, 202)


def _mail_locale(bundle: SiteBundle, accept: str | None, language: Any) -> str:
    """The site locale of the code e-mail: the request's ``language`` if the site offers it
    (or a close one), else the best for Accept-Language, else the site's default."""
    given = language if isinstance(language, str) else None
    try:
        return bundle.negotiator.choose(accept, given)
    except BadRequest:  # a free-text language the request keeps as given
        return bundle.negotiator.choose(accept, None)


async def verify_request(request: Request) -> Response:
    site_bundle(request)
    state = request.app.state
    peer = request.client.host if request.client else None
    limits: RightsLimits = state.rights_limits
    limits.client(state.gateway.locator.client(peer, request.headers))  # each code guess
    body = await read_json(request, {"code"})
    code = string_field(body, "code", 32)
    service = rights_service(request)
    request_id, token = request.path_params["request_id"], bearer_of(request)
    if (await service.authorized(request_id, token)).site != request.path_params["site"]:
        raise NotFound("unknown_request", "no request with this id and token")
    stored = await service.verify(request_id, token, code)
    return json_response(await service.view(stored, _base_url(request)))


async def get_request(request: Request) -> Response:
    site_bundle(request)
    service = rights_service(request)
    stored = await service.authorized(request.path_params["request_id"], bearer_of(request))
    if stored.site != request.path_params["site"]:
        raise NotFound("unknown_request", "no request with this id and token")
    return json_response(await service.view(stored, _base_url(request)))


async def download(request: Request) -> Response:
    bundle = site_bundle(request)
    service = rights_service(request)
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
    service = rights_service(request)
    stored = await service.confirm(
        request.path_params["request_id"],
        request.path_params["system"],
        request.app.state.site_rights,
        headers.get("x-consent-timestamp", ""),
        headers.get("x-consent-signature", ""),
        bytes(raw),
    )
    return json_response({"request_id": stored.request_id, "accepted": True})


def routes() -> list[BaseRoute]:
    base = "/v1/sites/{site}/rights-requests"
    return [
        Route(base, with_cors(create_request), methods=["POST"]),
        Route(f"{base}/{{request_id}}", with_cors(get_request), methods=["GET"]),
        Route(f"{base}/{{request_id}}/verify", with_cors(verify_request), methods=["POST"]),
        Route(f"{base}/{{request_id}}/download", with_cors(download), methods=["GET"]),
        *(
            Route(path, preflight, methods=["OPTIONS"])
            for path in (base, f"{base}/{{request_id}}", f"{base}/{{request_id}}/verify")
        ),
        Route(
            "/v1/rights-requests/{request_id}/systems/{system}", system_callback, methods=["POST"]
        ),
    ]
