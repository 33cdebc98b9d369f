"""Recording a preference change: ``POST /v1/sites/{site}/preferences``.

Two callers (ARCHITECTURE, round two). A browser, app or mini-program sends the subject's
secret in the body (CORS: the site's ``allowed_origins``, like the consent POST). A server
sends the site's API key (scope ``records:write``) and names the subject by ``subject_id`` or
by ``identity`` (then every subject linked to it gets the change, or, when none is, the
gateway's own subject for that identity, linked to it), for a channel such as ``store`` with
the ``evidence`` of how an offline choice was collected. Either way: validated against the
site's model, recorded through the outbox, ``201`` with a receipt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope

from gateway.core import paths
from gateway.core.errors import BadRequest, Unavailable
from gateway.preferences import identities
from gateway.preferences.identities import Identity
from gateway.preferences.service import PreferenceService
from gateway.recording.fields import parse_body
from gateway.recording.service import Recorded, RecordingService
from gateway.recording.subjects import gateway_subject_id
from gateway.recording.submission import Submission
from gateway.sites.catalog import SiteBundle
from gateway.web import records
from gateway.web.answer import Answer, RawHeaders, json_answer
from gateway.web.endpoint import AnswerEndpoint
from gateway.web.errors import answer_for, raw_headers


async def subjects_of_identity(
    state: Any, site: str, identity_type: str, digest: str, source: str
) -> list[str]:
    """Every subject linked to an identity (by keyed hash), or the gateway's own subject for
    it, linked now, so that the choice follows the identity to whatever links it later.
    ``state``: the app's state (its services)."""
    service: PreferenceService = state.preferences
    subjects = await service.subjects_of_hash(site, digest)
    if subjects:
        return subjects
    recording: RecordingService = state.recording
    subject = recording.subject_keys().for_identity(site, digest)
    await service.link_hash(site, subject, identity_type, digest, source)
    await recording.record_links(site, subject, [(identity_type, digest)], source)
    return [subject]


def recorded_answer(results: list[Recorded]) -> dict[str, Any]:
    """The first record's receipt at the top, like a consent's; every record when several
    subjects got the change."""
    first = results[0]
    answer: dict[str, Any] = {
        "subject_id": first.subject_id,
        "record_id": first.record_id,
        "recorded_at": first.recorded_at,
        "receipt": first.receipt,
    }
    if len(results) > 1:
        answer["records"] = [
            {
                "subject_id": r.subject_id,
                "record_id": r.record_id,
                "recorded_at": r.recorded_at,
                "receipt": r.receipt,
            }
            for r in results
        ]
    return answer


async def _by_api_key(
    state: Any,
    authorization: str,
    bundle: SiteBundle,
    body: Mapping[str, Any],
    submission: Submission,
) -> list[Recorded]:
    site = bundle.site
    service: PreferenceService = state.preferences
    recording: RecordingService = state.recording
    key = await service.auth.authenticate(authorization, site.id, "records:write")
    if body.get("subject_secret") is not None:
        raise BadRequest(
            "invalid_field",
            "an API key call names the subject (subject_id or identity), never its secret",
            field="subject_secret",
        )
    if body.get("identity") is not None:
        if body.get("subject_id") is not None:
            raise BadRequest("invalid_field", "give subject_id or identity", field="identity")
        identity: Identity = identities.from_json(site.preferences, body["identity"])
        recording.check_preferences(bundle, body)  # nothing is linked for a refused change
        (digest,) = await service.hashes(site.id, [identity])
        subjects = await subjects_of_identity(state, site.id, identity.type, digest, "api")
    else:
        subjects = [gateway_subject_id(body.get("subject_id"))]
    actor = f"api_key:{key.key_id}"
    return [
        await recording.record_preferences(
            bundle, body, submission, actor=actor, subject_id=subject
        )
        for subject in subjects
    ]


async def take_preferences(scope: Scope, receive: Receive) -> Answer:
    """201 with a receipt, or a JSON error (with CORS headers when the origin is allowed).
    A hot endpoint (gateway/web/endpoint.py), like the consent POST: the privacy center and
    apps call it as often as banners record choices."""
    state = scope["app"].state
    recording: RecordingService = state.recording
    found, gpc_values = records.pick(scope["headers"])
    cors: RawHeaders = []
    try:
        bundle = recording.site(scope["path_params"]["site"])
        own = f"{scope['scheme']}://{found.get(b'host', '')}"
        cors = raw_headers(records.cors_headers(found.get(b"origin"), own, bundle))
        raw = await records.read_body(receive, found.get(b"content-length"))
        body = parse_body(raw, found.get(b"content-type", ""))
        submission = records.submission_of(scope, found, gpc_values, raw)
        authorization = found.get(b"authorization", "")
        if authorization.partition(" ")[0].lower() == "bearer":
            results = await _by_api_key(state, authorization, bundle, body, submission)
        else:
            if body.get("identity") is not None:
                raise BadRequest(
                    "invalid_field", "naming a subject by identity needs an API key",
                    field="identity",
                )  # fmt: skip
            results = [await recording.record_preferences(bundle, body, submission)]
    except (BadRequest, Unavailable) as exc:
        return answer_for(exc, cors)
    if all(r.duplicate for r in results):
        cors.append((b"idempotent-replayed", b"true"))
    return json_answer(201, recorded_answer(results), cors)


post_preferences = AnswerEndpoint("post_preferences", take_preferences)


def routes() -> list[BaseRoute]:
    return [
        Route(paths.PREFERENCES, post_preferences, methods=["POST"]),
        Route(paths.PREFERENCES, records.preflight, methods=["OPTIONS"]),
    ]
