"""Serving CPU through uvicorn's HTTP protocol, without sockets: the gateway against bare.

Run: `.venv/bin/python -m bench.protocol`. `bench.serve` loads real sockets with wrk: its
figures include the kernel's share and swing with the machine's load (±10 % between runs).
`bench.inprocess` calls the ASGI app directly and so leaves out what uvicorn does around it:
parsing, the request cycle, the response head, and the gateway's connection guards. This
drives each side's own protocol class over an in-memory transport instead, 64 keep-alive
connections each fed the GET that bench.serve's wrk sends, every answer's status checked:

- the gateway as `consent-gateway serve` sets up its process and builds its uvicorn
  configuration (`gateway.cli.main.prepare_serving` and `server_config`, the functions
  `serve` itself calls), its settings parsed by `serve`'s own command line, on a data dir as
  `make run` leaves it, with 127.0.0.1 as a trusted proxy and Cloudflare's headers (as
  bench.serve);
- bare: `bench.bare:app` with the uvicorn options bench.serve's bare command gives
  (`harness.BARE_UVICORN`), its body as long as the gateway's answer.

It is a diagnostic, not the issue's figure: the serving target is bench.serve's, which
starts `consent-gateway serve` itself and loads it through real sockets.

Runs alternate and each figure is the least of `--repeat`. What it leaves out is what both
sides share: the socket system calls and uvloop's own I/O. So its ratio is lower than
bench.serve's (the shared part dilutes the difference there); it tells two versions of the
serving path apart to a few per cent where wrk cannot.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterable
from typing import Any

import uvicorn
import uvloop
from uvicorn.server import ServerState

from bench.harness import BARE_UVICORN, CDN_EDGE, as_flags
from bench.serve import HEADERS

PATHS = ("/v1/sites/demo/config", "/v1/sites/demo/consent.js")
# The GET bench.serve's wrk sends (its HEADERS, after wrk's Host).
REQUEST = (
    b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
    + "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items()).encode()
    + b"\r\n"
)
CONNECTIONS = 64


class MemoryTransport(asyncio.Transport):
    """A connection's transport that keeps the status of every response written to it and
    the pieces of the last one (kept, not copied: both sides' cost stays theirs)."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []
        self.last: list[bytes | bytearray | memoryview] = []
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data[:9] == b"HTTP/1.1 ":
            self.statuses.append(int(bytes(data[9:12])))
            self.last = []
        self.last.append(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        extra = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}
        return extra.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Side:
    """One server's protocol over ``CONNECTIONS`` memory connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.state = ServerState()
        self.links: list[tuple[Any, MemoryTransport]] = []

    def connect(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(CONNECTIONS):
            protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
                config=self.config, server_state=self.state, app_state={}, _loop=loop
            )
            transport = MemoryTransport()
            protocol.connection_made(transport)
            self.links.append((protocol, transport))

    async def round(self, request: bytes) -> None:
        """One request on every connection, then until every answer is written."""
        for protocol, _ in self.links:
            protocol.data_received(request)  # each starts its request's task
        # A turn of the loop at a time until uvicorn's task set is empty: awaiting the tasks
        # (gather, wait) would add a done callback per request to both sides' cost.
        while self.state.tasks:  # noqa: ASYNC110
            await asyncio.sleep(0)

    async def measure(self, request: bytes, requests: int) -> float:
        """Microseconds of process CPU per request; every answer must be a 200."""
        rounds = max(1, requests // CONNECTIONS)
        before = sum(len(t.statuses) for _, t in self.links)
        start = time.process_time()
        for _ in range(rounds):
            await self.round(request)
        spent = time.process_time() - start
        answers = [s for _, t in self.links for s in t.statuses[before // CONNECTIONS :]]
        if len(answers) != rounds * CONNECTIONS or set(answers) != {200}:
            raise RuntimeError(f"expected {rounds * CONNECTIONS} answers of 200, got {answers}")
        return spent / (rounds * CONNECTIONS) * 1e6

    def body_bytes(self) -> int:
        """The length of the body of the last answer on the first connection."""
        last = b"".join(self.links[0][1].last)
        return len(last) - (last.index(b"\r\n\r\n") + 4)

    def close(self) -> None:
        for protocol, _ in self.links:
            protocol.connection_lost(None)
        self.links = []


def gateway_config() -> uvicorn.Config:
    """The configuration `serve` builds, after what `serve` does in its process first; with
    127.0.0.1 as a trusted proxy and Cloudflare's headers, as bench.serve runs it."""
    from bench.inprocess import serve_settings
    from gateway.cli.main import prepare_serving, server_config

    settings = serve_settings("errors", *as_flags(CDN_EDGE))  # the shipped default log
    prepare_serving(settings)
    return server_config(settings)


def bare_config(size: int, media: str) -> uvicorn.Config:
    """bench.bare's app as bench.serve's `uvicorn` command runs it (harness.BARE_UVICORN)."""
    from bench.bare import make_app

    return uvicorn.Config(make_app(size, media), **BARE_UVICORN)  # type: ignore[arg-type]


async def run(requests: int, repeat: int, paths: tuple[str, ...] = PATHS) -> dict[str, Any]:
    """The least CPU per request of each side per path, runs alternating."""
    gateway = Side(gateway_config())
    results: dict[str, Any] = {}
    app: Any = gateway.config.app  # the Starlette app `serve` runs (uvicorn types it loosely)
    async with app.router.lifespan_context(app):
        gateway.connect()
        for path in paths:
            request = REQUEST % path.encode()
            await gateway.measure(request, CONNECTIONS * 20)  # warm: imports, the memo
            media = "application/json" if path.endswith("config") else "text/javascript"
            bare = Side(bare_config(gateway.body_bytes(), media))
            bare.connect()
            await bare.measure(REQUEST % b"/", CONNECTIONS * 20)
            runs: dict[str, list[float]] = {"bare": [], "gateway": []}
            for _ in range(repeat):
                runs["bare"].append(await bare.measure(REQUEST % b"/", requests))
                runs["gateway"].append(await gateway.measure(request, requests))
            results[path] = {side: min(values) for side, values in runs.items()}
            results[path]["body_bytes"] = gateway.body_bytes()
            bare.close()
        gateway.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=64 * 300, help="requests per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (the least)")
    args = parser.parse_args()
    found = uvloop.run(run(args.n, args.repeat))
    print(f"CPU per request through uvicorn's protocol, no sockets, least of {args.repeat}:")
    for path, figures in found.items():
        bare, gateway = figures["bare"], figures["gateway"]
        print(
            f"{path.rsplit('/', 1)[-1]:<11} ({figures['body_bytes']} B)  bare {bare:6.2f} us  "
            f"gateway {gateway:6.2f} us  gateway/bare {bare / gateway:.2f}x"
        )


if __name__ == "__main__":
    main()
