"""The baseline: a bare Starlette endpoint returning a body of the gateway's size."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def make_app(size: int, media: str) -> Starlette:
    """A Starlette app whose one route answers ``size`` bytes of ``media``."""
    body = b"x" * size

    async def endpoint(request: Request) -> Response:
        return Response(body, media_type=media)

    return Starlette(routes=[Route("/", endpoint)])


app = make_app(
    int(os.environ.get("BARE_BODY_BYTES", "2048")),
    os.environ.get("BARE_MEDIA_TYPE", "application/json"),
)
