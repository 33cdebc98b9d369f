"""Drive an ASGI callable with one raw request, in-process, and collect its answer bytes."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def scope_for(
    app: Any,
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    *,
    root_path: str = "",
) -> dict[str, Any]:
    """An HTTP scope as uvicorn builds it (``path`` includes ``root_path``)."""
    path, _, query = target.partition("?")
    full = root_path + path
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers or []]
    if not any(name == b"host" for name, _ in raw):
        raw.insert(0, (b"host", b"127.0.0.1:8000"))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": method,
        "root_path": root_path,
        "path": full,
        "raw_path": full.encode(),
        "query_string": query.encode("latin-1"),
        "headers": raw,
        "app": app,
        "state": {},
    }


async def call(asgi: ASGIApp, scope: dict[str, Any], body: bytes = b"") -> Answer:
    """Status, headers and the whole body that ``asgi`` sends for ``scope``."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 0
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await asgi(dict(scope), receive, send)
    return status, headers, b"".join(chunks)
