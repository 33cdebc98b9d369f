"""Every error answer the HTTP edge gives, in one JSON shape.

``{"error": code, "detail": text}`` plus ``"field"`` when one input is to blame. The front,
the routed endpoints, Starlette's 404/405 and the last-resort 500 all render through here,
so a client parses one shape and the two paths give the same bytes (tests/test_front.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.core.errors import BadRequest, Unavailable
from gateway.web.answer import Answer, AnswerResponse, RawHeaders, json_answer

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
# Basic, not Bearer: browsers then ask for the token once (as the password) for /admin/preview.
_ADMIN_CHALLENGE = (b"www-authenticate", b'Basic realm="consent-gateway admin"')


def error_answer(
    status: int,
    code: str,
    detail: str,
    *,
    field: str = "",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> Answer:
    """Status, headers and body of one JSON error; ``headers`` come first (CORS, Retry-After)."""
    body: dict[str, str] = {"error": code, "detail": detail}
    if field:
        body["field"] = field
    return json_answer(status, body, list(headers))


def raw_headers(headers: Mapping[str, str]) -> RawHeaders:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def answer_for(exc: BadRequest | Unavailable, headers: RawHeaders | None = None) -> Answer:
    """The answer to an error the gateway raised on purpose."""
    extra = list(headers or ())
    if isinstance(exc, Unavailable):
        extra.append((b"retry-after", str(exc.retry_after).encode()))
        return error_answer(503, "unavailable", exc.message, headers=extra)
    if exc.status_code == 401:
        # API keys ask for Bearer (gateway/preferences/auth.py); admin takes Basic.
        challenge = getattr(exc, "challenge", None)
        extra.append((b"www-authenticate", challenge.encode()) if challenge else _ADMIN_CHALLENGE)
    return error_answer(exc.status_code, exc.code, exc.detail, field=exc.field, headers=extra)


# Names no internals: the error is logged where it happened.
INTERNAL_ERROR = error_answer(500, "internal_error", "the gateway failed; it is logged")


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest | Unavailable)
    return AnswerResponse(answer_for(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    extra = raw_headers(exc.headers) if exc.headers else []
    return AnswerResponse(error_answer(exc.status_code, code, str(exc.detail), headers=extra))


Handler = Callable[[Request, Exception], Awaitable[Response]]
# Starlette's exception_handlers for the routed endpoints (gateway/app.py).
HANDLERS: dict[type[Exception], Handler] = {
    BadRequest: _gateway_error,
    Unavailable: _gateway_error,
    HTTPException: _http_error,
}
