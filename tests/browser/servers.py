"""Loopback HTTP servers for the browser tests: a test site on one origin, a gateway on another."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Reply = tuple[int, dict[str, str], bytes]
Handler = Callable[[str, Mapping[str, list[str]], bytes, Mapping[str, str]], Reply]


@dataclass
class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1:0 answering from a route table of callables."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append((method, self.path))
                handler = server.routes.get((method, url.path))
                if handler is None:
                    status, headers, content = 404, {"Content-Type": "text/plain"}, b"not found"
                else:
                    status, headers, content = handler(
                        url.path, parse_qs(url.query), body, dict(self.headers.items())
                    )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def do_OPTIONS(self) -> None:
                self._answer("OPTIONS")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest output quiet

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def page(self, path: str, html: str, headers: Mapping[str, str] | None = None) -> str:
        """Serve ``html`` at ``path``; returns the absolute URL."""
        content = html.encode()
        base = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
        reply: Reply = (200, {**base, **(headers or {})}, content)
        self.routes[("GET", path)] = lambda *_: reply
        return self.origin + path

    def file(self, path: str, content: bytes, media_type: str) -> None:
        reply: Reply = (200, {"Content-Type": media_type, "Cache-Control": "no-store"}, content)
        self.routes[("GET", path)] = lambda *_: reply

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
