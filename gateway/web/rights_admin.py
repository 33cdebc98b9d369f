"""The admin queue of rights requests: list, show, complete, deny, extend (API) and a page."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.core.errors import BadRequest, NotFound
from gateway.rights import kinds
from gateway.web.admin_session import read_form
from gateway.web.api import read_json
from gateway.web.auth import authorize, authorize_write, refuse_cross_site
from gateway.web.rights import MAX_REASON, json_response, rights_service, site_bundle, string_field
from gateway.web.session_cookie import csrf_ok, nonce_of, session_csrf


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
    bundle = site_bundle(request)
    type_, states, overdue, limit = _admin_filters(request)
    service = rights_service(request)
    found = await service.listing(bundle.site.id, type_, states, overdue, limit)
    return json_response(
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
    bundle = site_bundle(request)
    service = rights_service(request)
    stored = await service.get(request.path_params["request_id"], bundle.site.id)
    return json_response(await service.detail(stored))


async def admin_action(request: Request) -> Response:
    authorize_write(request)
    action = request.path_params["action"]
    if action not in ACTIONS:
        raise NotFound("not_found", "actions: complete, deny, extend")
    body = await read_json(request, {"reason"})
    reason = string_field(body, "reason", MAX_REASON)
    return json_response(await _act(request, action, reason))


ACTIONS = ("complete", "deny", "extend")


async def _act(request: Request, action: str, reason: str) -> dict[str, Any]:
    """Complete, deny or extend the request named in the path; its detail afterwards."""
    bundle = site_bundle(request)
    service = rights_service(request)
    stored = await service.get(request.path_params["request_id"], bundle.site.id)
    if action == "complete":
        stored = await service.complete(stored, reason, "admin")
    elif action == "deny":
        stored = await service.deny(stored, reason, "admin")
    else:
        stored = await service.extend(stored, request.app.state.site_rights(bundle.site.id),
                                      reason, "admin")  # fmt: skip
    detail: dict[str, Any] = await service.detail(stored)
    return detail


async def admin_form_action(request: Request) -> Response:
    """The queue page's buttons: a form post with the browser's admin session, its CSRF token
    in the ``csrf`` field (a form cannot send a header), from the gateway's own page only;
    then back to the queue (post/redirect/get)."""
    token = request.app.state.settings.admin_token
    if not token:
        raise NotFound("admin_disabled", "set GATEWAY_ADMIN_TOKEN to enable the admin API")
    refuse_cross_site(request)
    nonce = nonce_of(request)
    if nonce is None:
        raise BadRequest("unauthorized", "no admin session: log in at /admin/login",
                         status_code=401)  # fmt: skip
    form = await read_form(request)
    if not csrf_ok(token, nonce, form.get("csrf", "")):
        raise BadRequest("csrf_token_required", "send the session's CSRF token",
                         status_code=403)  # fmt: skip
    state = request.app.state
    peer = request.client.host if request.client else None
    state.limits.check_admin(state.gateway.locator.client(peer, request.headers))
    action = request.path_params["action"]
    if action not in ACTIONS:
        raise NotFound("not_found", "actions: complete, deny, extend")
    await _act(request, action, string_field(form, "reason", MAX_REASON))
    back = "/admin/rights?site=" + quote(request.path_params["site"], safe="")
    return RedirectResponse(back, status_code=303, headers={"Cache-Control": "no-store"})


def _buttons(site: str, request_id: str, csrf: str) -> str:
    """Complete / deny / extend, each with its reason, for a session's browser."""
    e = html.escape
    base = f"/admin/rights/{quote(site, safe='')}/{quote(request_id, safe='')}"
    return "".join(
        f'<form method=post action="{e(base)}/{a}"><input type=hidden name=csrf '
        f'value="{e(csrf)}"><input name=reason required maxlength={MAX_REASON} '
        f'aria-label="reason to {a}" placeholder=reason><button type=submit>{a}</button></form>'
        for a in ACTIONS
    )


async def admin_page(request: Request) -> Response:
    """The queue as a page: the same data as the API, escaped, no script."""
    authorize(request)
    catalog = request.app.state.gateway.catalog
    site_id = request.query_params.get("site") or ""
    if site_id and catalog.get(site_id) is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    type_, states, overdue, limit = _admin_filters(request)
    service = rights_service(request)
    found = await service.listing(site_id or None, type_, states, overdue, limit)
    csrf = session_csrf(request)
    e = html.escape
    rows = "".join(
        f"<tr class={'overdue' if service.is_overdue(r) else 'ok'}><td>{e(r.site)}</td>"
        f"<td><code>{e(r.request_id)}</code></td><td>{e(r.type)}</td><td>{e(r.state)}</td>"
        f"<td>{e(r.received_at[:16])}</td><td>{e(r.due_at[:16])}</td>"
        f"<td>{'overdue' if service.is_overdue(r) else ''}</td><td>{e(r.reason)}</td>"
        f"<td>{_buttons(r.site, r.request_id, csrf) if csrf and kinds.is_open(r.state) else ''}"
        "</td></tr>"
        for r in found
    )
    logout = (
        '<form method=post action="/admin/logout"><input type=hidden name=csrf '
        f'value="{e(csrf)}"><button type=submit>Log out</button></form>'
        if csrf
        else ""
    )
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Rights requests</title>"
        "<style>body{font:14px system-ui;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}.overdue{background:#fde2e1}</style>"
        f"<h1>Rights requests{(' — ' + e(site_id)) if site_id else ''}</h1>{logout}"
        "<p>Filter with ?site=, ?type=, ?state=, ?overdue=1. Act with the buttons (in an "
        "admin session), through POST /admin/v1/sites/{site}/rights-requests/{id}/"
        "complete|deny|extend or <code>consent-gateway rights</code>.</p>"
        "<table><tr><th>site</th><th>request</th><th>type</th><th>state</th><th>received</th>"
        f"<th>due</th><th></th><th>reason</th><th>act</th></tr>{rows}</table>"
    )
    return HTMLResponse(
        page,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'",
        },
    )


def routes() -> list[BaseRoute]:
    admin = "/admin/v1/sites/{site}/rights-requests"
    return [
        Route(admin, admin_list, methods=["GET"]),
        Route(f"{admin}/{{request_id}}", admin_show, methods=["GET"]),
        Route(f"{admin}/{{request_id}}/{{action}}", admin_action, methods=["POST"]),
        Route("/admin/rights", admin_page, methods=["GET"]),
        Route("/admin/rights/{site}/{request_id}/{action}", admin_form_action, methods=["POST"]),
    ]
