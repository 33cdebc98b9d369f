"""Admin sessions for browsers: a login page that takes the admin token once and sets a
signed, expiring session cookie, and the CSRF token that every state-changing request made
with that cookie must carry.

- The cookie is ``v1.<expires>.<nonce>.<mac>``, an HMAC under a key derived from
  GATEWAY_ADMIN_TOKEN: nothing is stored server-side, and rotating the token ends every
  session at once. It is HttpOnly and SameSite=Strict; over https it is
  ``__Host-cg_admin`` with Secure (no Domain, Path=/: no sibling host can set or read it);
  over plain http, where browsers refuse the ``__Host-`` prefix, it is ``cg_admin``.
- The CSRF token is an HMAC of the session's nonce: a page of the gateway reads it from
  ``GET /admin/session`` (same origin) and sends it as ``X-CSRF-Token``; forms send a
  ``csrf`` field. Writes made with the cookie are also refused when a browser marks them
  as coming from another site (gateway/web/auth.py).
- APIs and the CLI keep using ``Authorization: Bearer <token>``, which needs neither.
"""

from __future__ import annotations

import hmac
import html
import time
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from gateway.core.errors import BadRequest, NotFound
from gateway.web.auth import refuse_cross_site
from gateway.web.session_cookie import (
    CSRF_HEADER,
    cookie_name,
    csrf_ok,
    csrf_token,
    new_session,
    nonce_of,
    secure,
)

MAX_FORM = 4096
_PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'"


def _safe_next(value: str) -> str:
    """Where to go after logging in: a path of the admin pages, never another site."""
    if value.startswith("/admin/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/admin/rights"


def _page(message: str, next_path: str, status: int = 200) -> HTMLResponse:
    e = html.escape
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Admin login</title>"
        "<style>body{font:15px system-ui;margin:3em auto;max-width:28em}input{font:inherit;"
        "padding:.4em;width:100%;box-sizing:border-box;margin:.3em 0 1em}</style>"
        "<h1>Consent Gateway admin</h1>"
        f"{f'<p role=alert>{e(message)}</p>' if message else ''}"
        '<form method=post action="/admin/login">'
        "<label for=token>Admin token (GATEWAY_ADMIN_TOKEN)</label>"
        "<input id=token name=token type=password autocomplete=current-password required>"
        f'<input type=hidden name=next value="{e(next_path)}">'
        "<button type=submit>Log in</button></form>"
    )
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": _PAGE_CSP,
               "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"}  # fmt: skip
    return HTMLResponse(page, status, headers)


def _enabled(request: Request) -> str:
    token: str = request.app.state.settings.admin_token
    if not token:
        raise NotFound("admin_disabled", "set GATEWAY_ADMIN_TOKEN to enable the admin API")
    return token


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form (login, logout, the queue's action buttons), bounded."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise BadRequest(
            "unsupported_media_type",
            "send application/x-www-form-urlencoded form data",
            status_code=415,
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise BadRequest("body_too_large", f"body exceeds {MAX_FORM} bytes", status_code=413)
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=10, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("invalid_form", "the form is not valid UTF-8 form data") from exc
    return {k: v[0] for k, v in fields.items() if v}


async def login_page(request: Request) -> Response:
    _enabled(request)
    return _page("", _safe_next(request.query_params.get("next", "")))


async def login(request: Request) -> Response:
    """Check the token once; on success set the session cookie and go on to ``next``."""
    token = _enabled(request)
    refuse_cross_site(request)  # no login CSRF: a page of another site cannot log us in
    state = request.app.state
    peer = request.client.host if request.client else None
    state.limits.check_admin(state.gateway.locator.client(peer, request.headers))
    form = await read_form(request)
    next_path = _safe_next(form.get("next", ""))
    given = form.get("token", "").encode("utf-8", "replace")
    if not hmac.compare_digest(given, token.encode()):
        return _page("That is not the admin token.", next_path, 401)
    lifetime = state.settings.admin_session_minutes * 60
    response = RedirectResponse(next_path, status_code=303, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        cookie_name(request), new_session(token, lifetime, time.time()), max_age=lifetime,
        path="/", secure=secure(request), httponly=True, samesite="strict",
    )  # fmt: skip
    return response


async def session(request: Request) -> Response:
    """The session's CSRF token and expiry, for the gateway's own pages (same origin)."""
    token = _enabled(request)
    nonce = nonce_of(request)
    if nonce is None:
        raise BadRequest("unauthorized", "no admin session: log in at /admin/login",
                         status_code=401)  # fmt: skip
    expires = int(request.cookies[cookie_name(request)].split(".")[1])
    return Response(
        f'{{"csrf_token":"{csrf_token(token, nonce)}","expires":{expires}}}',
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def logout(request: Request) -> Response:
    """End the browser's session (a form with the ``csrf`` field, or the header)."""
    token = _enabled(request)
    refuse_cross_site(request)
    nonce = nonce_of(request)
    if nonce is not None:
        given = request.headers.get(CSRF_HEADER) or (await read_form(request)).get("csrf", "")
        if not csrf_ok(token, nonce, given):
            raise BadRequest("csrf_token_required", "send the session's CSRF token",
                             status_code=403)  # fmt: skip
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(cookie_name(request), path="/", secure=secure(request),
                           httponly=True, samesite="strict")  # fmt: skip
    return response


def routes() -> list[Route]:
    return [
        Route("/admin/login", login_page, methods=["GET"]),
        Route("/admin/login", login, methods=["POST"]),
        Route("/admin/session", session, methods=["GET"]),
        Route("/admin/logout", logout, methods=["POST"]),
    ]
