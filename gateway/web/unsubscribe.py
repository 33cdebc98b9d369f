"""E-mail one-click unsubscribe (RFC 8058): the links an e-mail tool asks for, and the link.

``POST /v1/sites/{site}/unsubscribe-links`` (API key, scope ``contactability``: the e-mail
tool's key) answers the link and the two header values for a recipient and topic. The link
itself, ``/v1/sites/{site}/unsubscribe/{token}``: a ``POST`` of
``List-Unsubscribe=One-Click`` (``application/x-www-form-urlencoded`` or
``multipart/form-data``) turns the e-mail channel off for that topic only, through the
outbox with evidence channel ``email``, and answers ``200`` without a page; a ``GET`` shows a
small localized page to confirm or to receive the topic less often, and changes nothing.
"""

from __future__ import annotations

import email.parser
import email.policy
import time
import urllib.parse
from typing import Any

from jinja2 import TemplateError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.core import paths
from gateway.core.errors import BadRequest, ConfigError, NotFound, Unavailable
from gateway.core.i18n import direction
from gateway.core.model import Region
from gateway.core.preference_model import Topic
from gateway.preferences import identities
from gateway.preferences.service import PreferenceService
from gateway.preferences.unsubscribe import (
    DEFAULT_TTL_DAYS,
    MAX_TTL_DAYS,
    ONE_CLICK,
    LinkClaims,
)
from gateway.recording.service import RecordingService
from gateway.serving.render import render_template
from gateway.sites.catalog import SiteBundle
from gateway.web import api, records
from gateway.web.answer import AnswerResponse, json_answer
from gateway.web.errors import answer_for
from gateway.web.preferences import recorded_answer, subjects_of_identity

MAX_FORM = 1024  # "List-Unsubscribe=One-Click" and a frequency, with room for multipart
TEMPLATE = "unsubscribe.html"
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
EMAIL = "email"


def _topic(bundle: SiteBundle, topic_id: Any, field: str = "topic") -> Topic:
    """A topic of the site that it sends by e-mail; 422 naming ``field`` otherwise."""
    model = bundle.site.preferences
    topic = model.topic(topic_id) if isinstance(topic_id, str) else None
    if topic is None:
        raise BadRequest(
            "unknown_topic",
            f"the site declares topics {', '.join(t.id for t in model.topics) or 'none'}",
            field=field,
            status_code=422,
        )
    if EMAIL not in topic.channels or model.channel(EMAIL) is None:
        raise BadRequest(
            "channel_not_offered",
            f"topic {topic.id!r} is not sent by e-mail",
            field=field,
            status_code=422,
        )
    return topic


async def create_link(request: Request) -> Response:
    """The link and the List-Unsubscribe headers for one recipient and topic."""
    site, model = await api.authorized(request, "contactability")
    body = await api.read_json(request, {"identity", "topic", "product_line", "ttl_days"})
    recording: RecordingService = request.app.state.recording
    bundle = recording.site(site)
    topic = _topic(bundle, body.get("topic"))
    line = body.get("product_line") or ""
    if not isinstance(line, str) or (line and model.product_line(line) is None):
        raise BadRequest(
            "unknown_product_line", "not a product line of the site", field="product_line",
            status_code=422,
        )  # fmt: skip
    ttl = body.get("ttl_days", DEFAULT_TTL_DAYS)
    if type(ttl) is not int or not 1 <= ttl <= MAX_TTL_DAYS:
        raise BadRequest("invalid_field", f"whole days, 1-{MAX_TTL_DAYS}", field="ttl_days")
    identity = identities.from_json(model, body.get("identity"))
    service: PreferenceService = request.app.state.preferences
    (digest,) = await service.hashes(site, [identity])
    links = await service.unsubscribe_links()
    token, expires = links.issue(
        site, (identity.type, digest), topic.id, line, now=int(time.time()), ttl_days=ttl
    )
    base = request.app.state.gateway.base_url(request.url.scheme, request.headers.get("host"))
    if not base.startswith("https://") and not base.startswith("http://"):
        raise Unavailable(
            "the gateway does not know its public address: set GATEWAY_PUBLIC_URL",
            retry_after=60,
        )
    url = base + paths.url(paths.UNSUBSCRIBE, site=site, token=token)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    return api.json_response(
        {
            "url": url,
            "headers": {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": ONE_CLICK},
            "expires_at": at,
        },
        201,
    )


def _form(raw: bytes, content_type: str) -> dict[str, str]:
    """The fields of a small form body (urlencoded or multipart); first value of each."""
    media = content_type.partition(";")[0].strip().lower()
    if media == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        fields: dict[str, str] = {}
        if message.is_multipart():
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if isinstance(name, str) and isinstance(payload, bytes):
                    fields.setdefault(name, payload.decode("utf-8", "replace").strip())
        return fields
    try:
        text = raw.decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("invalid_body", "send List-Unsubscribe=One-Click as a form") from exc
    found: dict[str, str] = {}
    for key, value in pairs:
        found.setdefault(key, value)
    return found


async def _claims(request: Request) -> tuple[SiteBundle, LinkClaims, Topic]:
    recording: RecordingService = request.app.state.recording
    bundle = recording.site(request.path_params["site"])
    service: PreferenceService = request.app.state.preferences
    links = await service.unsubscribe_links()
    claims = links.verify(request.path_params["token"], site=bundle.site.id, now=int(time.time()))
    try:
        topic = _topic(bundle, claims.topic)
    except BadRequest as exc:  # the site no longer sends it by e-mail: nothing to stop
        raise NotFound("unknown_topic", "the link's topic is no longer sent by e-mail") from exc
    return bundle, claims, topic


async def unsubscribe(request: Request) -> Response:
    """A mailbox provider's one-click POST (200, no page), or the page's own forms."""
    page = False
    try:
        bundle, claims, topic = await _claims(request)
        raw = await _read(request)
        fields = _form(raw, request.headers.get("content-type", ""))
        page = fields.get("page") == "1"
        frequency = fields.get("frequency")
        if frequency is not None and page:
            # Less often, on e-mail: an act of its own for this topic's e-mails.
            change: dict[str, Any] = {"frequency": frequency, "channels": {EMAIL: True}}
            state = "saved"
        elif fields.get("List-Unsubscribe") == "One-Click":
            change = {"channels": {EMAIL: False}}
            state = "unsubscribed"
        else:
            raise BadRequest(
                "invalid_body", f"the body must be {ONE_CLICK}", field="List-Unsubscribe"
            )
        body: dict[str, Any] = {
            "preferences": {"topics": {topic.id: change}},
            "product_line": claims.product_line,
            "channel": EMAIL,
            "evidence": {
                "collected_by": "unsubscribe page" if page else "one-click unsubscribe link",
                "method": "one_click",
                "reference": claims.idempotency_key,
            },
        }
        if not page:  # a provider retrying its POST records nothing new
            body["idempotency_key"] = claims.idempotency_key
        recording: RecordingService = request.app.state.recording
        recording.check_preferences(bundle, body)  # nothing is linked for a refused change
        subjects = await subjects_of_identity(
            request.app.state,
            bundle.site.id,
            claims.identity_type,
            claims.identity_hash,
            "unsubscribe",
        )
        found, gpc_values = records.pick(request.scope["headers"])
        submission = records.submission_of(request.scope, found, gpc_values, raw)
        results = [
            await recording.record_preferences(
                bundle, body, submission, actor="unsubscribe", subject_id=subject
            )
            for subject in subjects
        ]
    except (BadRequest, Unavailable) as exc:
        if page and isinstance(exc, BadRequest) and exc.status_code in (403, 404):
            return _page(request, None, None, "invalid", exc.status_code)
        return AnswerResponse(answer_for(exc))
    if page:
        return _page(request, bundle, topic, state, 200, frequency)
    answer = {"unsubscribed": True, "topic": topic.id, **recorded_answer(results)}
    replayed = [(b"idempotent-replayed", b"true")] if all(r.duplicate for r in results) else []
    return AnswerResponse(json_answer(200, answer, replayed))


async def _read(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and not (declared.isascii() and declared.isdigit()):
        raise BadRequest("invalid_content_length", "Content-Length must be a number")
    if declared is not None and int(declared) > MAX_FORM:
        raise BadRequest("body_too_large", f"body exceeds {MAX_FORM} bytes", status_code=413)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM:
            raise BadRequest("body_too_large", f"body exceeds {MAX_FORM} bytes", status_code=413)
    return bytes(raw)


async def confirm_page(request: Request) -> Response:
    """The page: opening it changes nothing."""
    try:
        bundle, _, topic = await _claims(request)
    except (BadRequest, Unavailable) as exc:
        if isinstance(exc, BadRequest) and exc.status_code in (403, 404):
            return _page(request, None, None, "invalid", exc.status_code)
        return AnswerResponse(answer_for(exc))
    return _page(request, bundle, topic, "confirm", 200)


def _page(
    request: Request,
    bundle: SiteBundle | None,
    topic: Topic | None,
    state: str,
    status: int,
    frequency: str | None = None,
) -> Response:
    gateway = request.app.state.gateway
    if bundle is None:
        found = gateway.catalog.get(request.path_params["site"])
        if found is None:
            return AnswerResponse(answer_for(NotFound("unknown_site", "no such site")))
        bundle = found
    _, _, locale, _ = gateway.decide(
        bundle, Region(), request.headers.get("accept-language"), [],
        request.query_params.get("lang"),
    )  # fmt: skip
    names = {f.id: f.name for f in bundle.site.preferences.frequencies}
    context = {
        "site": {"id": bundle.site.id, "name": bundle.site.name},
        "language": locale.replace("_", "-"),
        "dir": direction(locale),
        "theme": dict(bundle.site.theme),
        "state": state,
        "topic": None
        if topic is None
        else {
            "name": topic.name,
            "description": topic.description,
            "frequencies": [{"id": f, "name": names.get(f, f)} for f in topic.frequencies],
            "frequency": frequency or topic.default_frequency,
        },
        "privacy_center_url": paths.url(paths.PRIVACY_CENTER, site=bundle.site.id),
    }
    env = gateway.renderer.environment(bundle, locale)
    try:
        html = render_template(env, TEMPLATE, context)
    except TemplateError as exc:
        raise ConfigError(f"template error: {exc}", where=str(bundle.directory)) from exc
    return HTMLResponse(
        html,
        status,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": CSP,
            "Referrer-Policy": "no-referrer",
            "X-Robots-Tag": "noindex",
        },
    )


def routes() -> list[BaseRoute]:
    return [
        Route(paths.UNSUBSCRIBE_LINKS, create_link, methods=["POST"]),
        Route(paths.UNSUBSCRIBE, unsubscribe, methods=["POST"]),
        Route(paths.UNSUBSCRIBE, confirm_page, methods=["GET"]),
    ]
