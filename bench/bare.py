"""The baseline: a bare Starlette endpoint returning a body of the gateway's size."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = b"x" * int(os.environ.get("BARE_BODY_BYTES", "2048"))
MEDIA = os.environ.get("BARE_MEDIA_TYPE", "application/json")


async def endpoint(request: Request) -> Response:
    return Response(BODY, media_type=MEDIA)


app = Starlette(routes=[Route("/", endpoint)])
