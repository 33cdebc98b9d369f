"""The admin check every admin endpoint calls first, and the ops token's.

An ``Authorization: Bearer <token>`` (APIs, the CLI), or a browser's admin session cookie
(gateway/web/session_cookie.py, opened at /admin/login). Never Basic: a Basic challenge made
browsers cache the token and send it with any request to the gateway, a cross-site form POST
included (a review reloaded the catalog from another origin that way). A request made with
the cookie that changes anything (any method but GET and HEAD) needs the session's CSRF token
in ``X-CSRF-Token`` and must not come from another site's page; admin writes refuse
requests a browser marks as cross-site whatever they authenticate with.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from gateway.core.errors import BadRequest, NotFound
from gateway.web.session_cookie import CSRF_HEADER, csrf_ok, nonce_of

# Sec-Fetch-Site values of requests a page of the gateway itself, or a person typing the URL
# or a non-browser client (which sends no such header) makes.
SAME_SITE_FETCH = frozenset({"same-origin", "none"})
SAFE_METHODS = frozenset({"GET", "HEAD"})


def _bearer(request: Request) -> bytes:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return b""
    return given.strip().encode("latin-1", "replace")


def authorize(request: Request) -> None:
    """Constant-time bearer check, or a genuine session cookie (with the CSRF token for a
    change); admin is disabled entirely while the token is empty."""
    token = request.app.state.settings.admin_token
    if not token:
        raise NotFound("admin_disabled", "set GATEWAY_ADMIN_TOKEN to enable the admin API")
    given = _bearer(request)
    if given or request.headers.get("authorization"):
        if hmac.compare_digest(given, token.encode()):
            return
    else:
        nonce = nonce_of(request)
        if nonce is not None:
            if request.method not in SAFE_METHODS:
                refuse_cross_site(request)
                if not csrf_ok(token, nonce, request.headers.get(CSRF_HEADER, "")):
                    raise BadRequest(
                        "csrf_token_required",
                        "a change made with the admin session needs its CSRF token in "
                        "X-CSRF-Token (GET /admin/session)",
                        status_code=403,
                    )
            return
    raise BadRequest(
        "unauthorized",
        "a valid `Authorization: Bearer <token>` or an admin session (/admin/login) is required",
        status_code=401,
    )


def _own_origin(request: Request) -> str:
    public = request.app.state.settings.public_url.rstrip("/")
    if public:
        scheme, _, rest = public.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def refuse_cross_site(request: Request) -> None:
    """403 for a write a browser sends from another site (CSRF), whatever it authenticates."""
    fetch_site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if (fetch_site is not None and fetch_site not in SAME_SITE_FETCH) or (
        origin is not None and origin != _own_origin(request)
    ):
        raise BadRequest(
            "cross_site_request",
            "admin changes are not accepted from another site's page",
            status_code=403,
        )


def authorize_write(request: Request) -> None:
    """Everything an admin write needs: the token, a same-site request, and the rate limit."""
    authorize(request)
    refuse_cross_site(request)
    state = request.app.state
    peer = request.client.host if request.client else None
    state.limits.check_admin(state.gateway.locator.client(peer, request.headers))


def ops_authorized(request: Request) -> bool:
    """True if the request carries the ops token (never when none is configured)."""
    token = request.app.state.settings.ops_token
    return bool(token) and hmac.compare_digest(_bearer(request), token.encode())
