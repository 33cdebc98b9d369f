"""Server-to-server endpoints (CRM, marketing automation, apps): per-site API keys.

Thin handlers: parse and check the body here, then one call into the preferences service.
Errors are the app's typed errors (gateway/core/errors.py), rendered by its handlers.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.core.errors import BadRequest, NotFound, Unavailable
from gateway.core.preference_model import PreferenceModel
from gateway.preferences import contactability, identities, tokens
from gateway.preferences.identities import Identity, InvalidIdentity
from gateway.preferences.service import PreferenceService, check_subject
from gateway.recording.service import RecordingService
from gateway.recording.subjects import secret_from_authorization
from gateway.web import records
from gateway.web.answer import AnswerResponse
from gateway.web.errors import answer_for, raw_headers
from gateway.web.public import etag_matches

MAX_BODY = 256 * 1024  # a contactability batch of 1,000 identities fits with room to spare
MAX_BATCH = 1000


def json_response(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data), status, {"Cache-Control": "no-store"}, media_type="application/json"
    )


async def read_json(request: Request, allowed: set[str]) -> Mapping[str, Any]:
    """The JSON object of the request, bounded in size, with no keys beyond ``allowed``."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/json":
        raise BadRequest(
            "unsupported_media_type", "send Content-Type: application/json", status_code=415
        )
    declared = request.headers.get("content-length")
    if declared is not None and not (declared.isascii() and declared.isdigit()):
        raise BadRequest("invalid_content_length", "Content-Length must be a number")
    if declared is not None and int(declared) > MAX_BODY:
        raise BadRequest("body_too_large", f"body exceeds {MAX_BODY} bytes", status_code=413)
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise BadRequest(
                    "body_too_large", f"body exceeds {MAX_BODY} bytes", status_code=413
                )
    except ClientDisconnect as exc:
        raise BadRequest("client_disconnected", "the client went away mid-body") from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("invalid_json", f"the body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("invalid_body", "the body must be a JSON object")
    for key in data:
        if key not in allowed:
            raise BadRequest(
                "unknown_field",
                f"unknown field {key[:40]!r}; allowed: {', '.join(sorted(allowed))}",
                field=key[:40],
            )
    return data


async def authorized(request: Request, scope: str) -> tuple[str, PreferenceModel]:
    """The site id and its preference model, once the caller's API key is checked."""
    site_id = request.path_params["site"]
    bundle = request.app.state.gateway.catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    service: PreferenceService = request.app.state.preferences
    await service.auth.authenticate(request.headers.get("authorization"), site_id, scope)
    return site_id, bundle.site.preferences


async def _state(request: Request, site: str, subject_id: str) -> dict[str, Any]:
    """A subject's current consents (records) with its preferences and identity types."""
    history = await request.app.state.recording.history(site, subject_id)
    current = history.get("current")
    service: PreferenceService = request.app.state.preferences
    state = await service.state_of(site, subject_id)
    times = [t for t in (current and current["recorded_at"], state["updated_at"]) if t]
    return {
        "subject_id": subject_id,
        "consents": dict(current["choices"]) if current else None,
        "consent_record_id": current["record_id"] if current else None,
        "consent_recorded_at": current["recorded_at"] if current else None,
        "consent_action": current.get("action") if current else None,
        "consent_revision": current.get("consent_revision") if current else None,
        "preferences": state["preferences"],
        "preferences_updated_at": state["updated_at"],
        "identities": state["identities"],
        "updated_at": max(times, default=None),
    }


async def issue_identity_token(request: Request) -> Response:
    site, model = await authorized(request, "identities:write")
    body = await read_json(request, {"identities", "subject_id", "ttl_seconds"})
    items = body.get("identities")
    if not isinstance(items, list) or not 1 <= len(items) <= tokens.MAX_IDENTITIES:
        raise BadRequest(
            "invalid_field", f"a list of 1-{tokens.MAX_IDENTITIES} identities", field="identities"
        )
    found = [identities.from_json(model, item, f"identities[{n}]") for n, item in enumerate(items)]
    subject = body.get("subject_id")
    if subject is not None and not isinstance(subject, str):
        raise BadRequest("invalid_field", "a string or null", field="subject_id")
    ttl = body.get("ttl_seconds", tokens.DEFAULT_TTL)
    if type(ttl) is not int or not 1 <= ttl <= tokens.MAX_TTL:
        raise BadRequest("invalid_field", f"whole seconds, 1-{tokens.MAX_TTL}", field="ttl_seconds")
    service: PreferenceService = request.app.state.preferences
    token, expires = await service.issue_token(
        site, found, None if subject is None else check_subject(subject), ttl
    )
    at = dt.datetime.fromtimestamp(expires, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json_response({"token": token, "expires_at": at, "expires_in": ttl}, 201)


async def link_identity(request: Request) -> Response:
    site, model = await authorized(request, "identities:write")
    subject_id = check_subject(request.path_params["subject_id"])
    body = await read_json(request, {"type", "value"})
    identity = identities.from_json(model, body)
    service: PreferenceService = request.app.state.preferences
    (digest,) = await service.hashes(site, [identity])
    await service.link_hash(site, subject_id, identity.type, digest, "api")
    recording: RecordingService = request.app.state.recording
    await recording.record_links(site, subject_id, [(identity.type, digest)], "api")
    return json_response({"subject_id": subject_id, "type": identity.type, "linked": True}, 201)


async def find_subjects(request: Request) -> Response:
    site, model = await authorized(request, "subjects:read")
    wanted = request.query_params.getlist("identity")
    if len(wanted) != 1:
        raise BadRequest(
            "invalid_parameter", "give exactly one identity=TYPE:VALUE", field="identity"
        )
    identity = identities.from_query(model, wanted[0])
    service: PreferenceService = request.app.state.preferences
    subjects = await service.subjects_for(site, identity)
    return json_response({"subjects": [await _state(request, site, s) for s in subjects]})


# What the subject API leaves out of each preference record (as of consents: records.py).
_PRIVATE = ("ip_truncated", "user_agent", "idempotency_key")
HISTORY_SHOWN = 100


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DIGITS36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(number: int) -> str:
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = _DIGITS36[digit] + text
        if not number:
            return text


def state_etag(updated_at: str | None) -> str:
    """The ETag of a subject's state: its last change's time (RFC 3339) in microseconds since
    1970, base 36.

    The snippet keeps this revision in its cookie and works it out for its own records from
    their ``recorded_at`` (static/consent.js ``rev``), so after its own choice it need not ask.
    """
    try:
        when = dt.datetime.fromisoformat(str(updated_at).replace("Z", "+00:00"))
    except ValueError:
        return '"' + re.sub(r"[^0-9A-Za-z]", "", str(updated_at)) + '"'
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return '"' + _base36((when - _EPOCH) // dt.timedelta(microseconds=1)) + '"'


async def get_subject(request: Request) -> Response:
    """A subject's state and recent preference changes, for an API key or for the subject
    itself (``Authorization: Subject <secret>``: the snippet's conditional check, 304 while
    its ETag is unchanged, and the privacy center)."""
    secret = secret_from_authorization(request.headers.get("authorization"))
    headers: dict[str, str] = {}
    if secret is None:
        site, _ = await authorized(request, "subjects:read")
        subject_id = check_subject(request.path_params["subject_id"])
    else:
        site = request.path_params["site"]
        bundle = request.app.state.gateway.catalog.get(site)
        if bundle is None:
            raise NotFound("unknown_site", f"no site named {site[:64]!r}")
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        headers = records.cors_headers(request.headers.get("origin"), own, bundle)
        subject_id = check_subject(request.path_params["subject_id"])
        recording: RecordingService = request.app.state.recording
        recording.subject_keys().require(site, subject_id, secret)
    state = await _state(request, site, subject_id)
    if state["consents"] is None and not state["preferences"] and not state["identities"]:
        error = NotFound("unknown_subject", "nothing is recorded or linked for this subject")
        # With the CORS headers: the snippet reads it as "nothing newer", not as a failure.
        return AnswerResponse(answer_for(error, raw_headers(headers)))
    etag = state_etag(state["updated_at"])
    # Private and revalidated every time: the state changes from other channels at any time.
    headers.update({"ETag": etag, "Cache-Control": "private, no-cache"})
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    history = await request.app.state.recording.preference_history(site, subject_id)
    state["preference_history"] = [
        {k: v for k, v in r.items() if k not in _PRIVATE} for r in history[:HISTORY_SHOWN]
    ]
    response = json_response(state)
    response.headers.update(headers)
    return response


async def check_contactability(request: Request) -> Response:
    site, model = await authorized(request, "contactability")
    body = await read_json(request, {"channel", "topic", "product_line", "identities"})
    q = contactability.question(
        model, body.get("channel"), body.get("topic"), body.get("product_line")
    )
    items = body.get("identities")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise BadRequest("invalid_field", f"a list of 1-{MAX_BATCH} identities", field="identities")
    parsed: list[Identity | InvalidIdentity] = []
    for item in items:
        try:
            parsed.append(identities.from_json(model, item))
        except InvalidIdentity as exc:  # one bad row answers no, not the whole batch
            parsed.append(exc)
    service: PreferenceService = request.app.state.preferences
    answers = await service.contactability(site, q, parsed)
    return json_response(
        {
            "results": [
                {"identity": item, **answer.as_json()}
                for item, answer in zip(items, answers, strict=True)
            ]
        }
    )


IDENTIFY_SUBJECTS = 10  # the customer's most recently linked devices the state is read from


async def identify(request: Request) -> Response:
    """The snippet presents an identity token the site gave it: its subject is linked to the
    customer's identities, and it gets the customer's latest choices (a second browser shows
    no banner). Browser-facing: CORS for the site's origins, no API key; the single-use,
    short-lived token is the credential."""
    site_id = request.path_params["site"]
    bundle = request.app.state.gateway.catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    headers = records.cors_headers(request.headers.get("origin"), own, bundle)
    try:
        answer = await _identified(request, site_id)
    except (BadRequest, Unavailable) as exc:  # the page reads why: CORS on errors too
        return AnswerResponse(answer_for(exc, raw_headers(headers)))
    response = json_response(answer)
    response.headers.update(headers)
    return response


async def _identified(request: Request, site_id: str) -> dict[str, Any]:
    body = await read_json(request, {"subject_id", "subject_secret", "token"})
    token = body.get("token")
    if not isinstance(token, str):
        raise BadRequest("invalid_field", "the identity token from the site", field="token")
    # The browser proves it holds the subject (review §4d): a subject id alone would let a
    # page link someone else's subject to the identity in its own token.
    recording: RecordingService = request.app.state.recording
    subject_id = check_subject(recording.bind_subject(site_id, body)["subject_id"])
    service: PreferenceService = request.app.state.preferences
    claims = await service.redeem_token(site_id, token, subject_id)
    await recording.record_links(site_id, subject_id, claims.identities, "token")
    subjects = await service.subjects_of_token(site_id, claims)
    states = [await _state(request, site_id, s) for s in subjects[:IDENTIFY_SUBJECTS]]
    consented = [s for s in states if s["consents"] is not None]
    latest = max(consented, key=lambda s: s["consent_recorded_at"], default=None)
    preferences: dict[str, Any] = {}
    for state in sorted(states, key=lambda s: s["preferences_updated_at"] or ""):
        preferences.update(state["preferences"])  # the newest state of each product line wins
    answer = {
        "subject_id": subject_id,
        "identities": sorted({t for t, _ in claims.identities}),
        "consents": latest["consents"] if latest else None,
        "consent_record_id": latest["consent_record_id"] if latest else None,
        "consent_recorded_at": latest["consent_recorded_at"] if latest else None,
        "consent_action": latest["consent_action"] if latest else None,
        "consent_revision": latest["consent_revision"] if latest else None,
        "preferences": preferences,
    }
    return answer


def routes() -> list[BaseRoute]:
    base = "/v1/sites/{site}"
    return [
        Route(f"{base}/identity-tokens", issue_identity_token, methods=["POST"]),
        Route(f"{base}/subjects", find_subjects, methods=["GET"]),
        Route(f"{base}/subjects/{{subject_id}}", get_subject, methods=["GET"]),
        Route(f"{base}/subjects/{{subject_id}}", records.preflight, methods=["OPTIONS"]),
        Route(f"{base}/subjects/{{subject_id}}/identities", link_identity, methods=["POST"]),
        Route(f"{base}/contactability", check_contactability, methods=["POST"]),
        Route(f"{base}/identify", identify, methods=["POST"]),
        Route(f"{base}/identify", records.preflight, methods=["OPTIONS"]),
    ]
