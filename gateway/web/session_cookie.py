"""The admin session cookie and its CSRF token (the pages that open and close a session
are gateway/web/admin_session.py).

The cookie is ``v1.<expires>.<nonce>.<mac>``, an HMAC under a key derived from
GATEWAY_ADMIN_TOKEN: nothing is stored server-side, and rotating the token ends every session
at once. HttpOnly and SameSite=Strict; over https it is ``__Host-cg_admin`` with Secure (no
Domain, Path=/: no sibling host can set it); over plain http, where browsers refuse the
``__Host-`` prefix, it is ``cg_admin``. The CSRF token is an HMAC of the session's nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from starlette.requests import Request

SECURE_NAME = "__Host-cg_admin"
PLAIN_NAME = "cg_admin"
CSRF_HEADER = "x-csrf-token"


def _key(admin_token: str) -> bytes:
    return hmac.new(
        admin_token.encode(), b"consent-gateway admin session v1", hashlib.sha256
    ).digest()


def _mac(key: bytes, label: str, text: str) -> str:
    return hmac.new(key, f"{label}\0{text}".encode(), hashlib.sha256).hexdigest()


def new_session(admin_token: str, lifetime: int, now: float) -> str:
    expires = int(now) + lifetime
    nonce = secrets.token_urlsafe(18)
    return f"v1.{expires}.{nonce}.{_mac(_key(admin_token), 'session', f'{expires}.{nonce}')}"


def session_nonce(admin_token: str, value: str, now: float) -> str | None:
    """The nonce of a genuine, unexpired session cookie; None for anything else."""
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != "v1" or not (parts[1].isascii() and parts[1].isdigit()):
        return None
    _, expires, nonce, mac = parts
    expected = _mac(_key(admin_token), "session", f"{expires}.{nonce}")
    if not hmac.compare_digest(expected.encode(), mac.encode("utf-8", "replace")):
        return None
    return nonce if int(expires[:12]) > now else None


def csrf_token(admin_token: str, nonce: str) -> str:
    return _mac(_key(admin_token), "csrf", nonce)


def csrf_ok(admin_token: str, nonce: str, given: str) -> bool:
    return hmac.compare_digest(
        csrf_token(admin_token, nonce).encode(), given.encode("utf-8", "replace")
    )


def secure(request: Request) -> bool:
    public: str = request.app.state.settings.public_url
    return request.url.scheme == "https" or public.startswith("https://")


def cookie_name(request: Request) -> str:
    return SECURE_NAME if secure(request) else PLAIN_NAME


def nonce_of(request: Request) -> str | None:
    """The session of the request's cookie, if genuine and unexpired."""
    token: str = request.app.state.settings.admin_token
    value = request.cookies.get(cookie_name(request))
    if not token or not value or len(value) > 200:
        return None
    return session_nonce(token, value, time.time())


def session_csrf(request: Request) -> str | None:
    """The CSRF token of the request's session, for a page's log-out form; None without one."""
    nonce = nonce_of(request)
    if nonce is None:
        return None
    return csrf_token(request.app.state.settings.admin_token, nonce)
