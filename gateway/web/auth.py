"""The admin bearer-token check every admin endpoint calls first."""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.requests import Request

from gateway.core.errors import BadRequest, NotFound


def authorize(request: Request) -> None:
    """Constant-time bearer check; admin is disabled entirely while the token is empty."""
    token = request.app.state.settings.admin_token
    if not token:
        raise NotFound("admin_disabled", "set GATEWAY_ADMIN_TOKEN to enable the admin API")
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    secret = given.strip().encode("latin-1", "replace")
    if scheme.lower() == "basic":
        # Browsers can open /admin/preview with the token as the Basic password.
        try:
            secret = base64.b64decode(secret, validate=True).partition(b":")[2]
        except (binascii.Error, ValueError):
            secret = b""
    elif scheme.lower() != "bearer":
        secret = b""
    if not hmac.compare_digest(secret, token.encode()):
        raise BadRequest(
            "unauthorized",
            "a valid `Authorization: Bearer <token>` (or Basic "
            "with the token as password) is required",
            status_code=401,
        )
