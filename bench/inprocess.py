"""CPU per request of the hot paths through the whole ASGI app, in-process (no sockets).

Run: `.venv/bin/python -m bench.inprocess`. wrk figures on a shared 2-core machine swing by
±50% with other load; the process CPU time the app spends per request swings far less, so
this is what to compare between two versions of the code (run each a few times, alternating).
It drives the app with the ASGI protocol only, so it runs against older code as well. The app
is the one `consent-gateway serve` runs: built by the same factory (`create_app(settings,
serving=True)`) with the settings `serve`'s own command line gives (`command_settings`), so
what it times is what users run, less the sockets (which bench.serve and bench.record keep).

Requests run one after the other by default, so each POST is its own fsync'd group commit.
`--in-flight 64` holds 64 at once, as bench.record's wrk connections do, so POSTs share
group commits as they do under load (GETs then also pay for a task each, the harness's own
cost).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.harness import as_make_run
from gateway.app import create_app
from gateway.core.malloc import pin_mmap_threshold
from gateway.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"wrk"),
    (b"accept-language", b"de-DE,de;q=0.9,en;q=0.8"),
    (b"cf-ipcountry", b"DE"),
]


def _scope(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], i: int = 0
) -> dict[str, Any]:
    # Each request from its own client address (10.x.y.z), as visitors come: the default
    # write limits check every POST and refuse none.
    client = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "server": ("127.0.0.1", 8000), "client": (client, 50000), "scheme": "http",
        "method": method, "root_path": "", "path": path, "raw_path": path.encode(),
        "query_string": b"", "headers": headers, "app": app, "state": {},
    }  # fmt: skip


async def _call(app: Any, scope: dict[str, Any], body: bytes) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _measure(app: Any, n: int, make: Any, in_flight: int = 1) -> float:
    """Microseconds of process CPU per request over n requests, ``in_flight`` at a time (1:
    one after the other; more: as many at once as a loaded server holds, so POSTs share
    group commits as they do under wrk)."""

    async def one(i: int) -> None:
        scope, body, expected = make(i)
        status = await _call(app, scope, body)
        assert status == expected, status

    start = time.process_time()
    for first in range(0, n, in_flight):
        if in_flight == 1:
            await one(first)
        else:
            await asyncio.gather(*(one(i) for i in range(first, min(n, first + in_flight))))
    return (time.process_time() - start) / n * 1e6


def serve_settings(access_log: str, *extra: str) -> Settings:
    """The settings `consent-gateway serve` runs with, parsed by its own command line (the
    GATEWAY_* environment and every default as shipped), given the demo site's files, a
    scratch data dir and the access-log mode."""
    data_dir = Path(as_make_run(tempfile.mkdtemp(prefix="cg-inproc-")))  # as `make run` leaves it
    argv = ["serve", "--banners-dir", str(ROOT / "banners"), "--locales-dir",
            str(ROOT / "locales"), "--data-dir", str(data_dir), "--access-log", access_log,
            *extra]  # fmt: skip
    try:
        from gateway.cli.main import command_settings
    except ImportError:  # a checkout from before it: the same defaults, built directly
        return Settings(banners_dir=ROOT / "banners", locales_dir=ROOT / "locales",
                        data_dir=data_dir, access_log=access_log)  # fmt: skip
    return command_settings(argv)


async def run(
    n: int,
    repeat: int,
    only: str = "",
    modes: tuple[str, ...] = ("errors",),
    in_flight: int = 1,
) -> dict[str, float]:
    """The least CPU per request of each case, per access-log mode; runs of the modes alternate."""
    # As `serve` builds it: malloc's threshold pinned, the serving process's GC tuning.
    settings = {mode: serve_settings(mode) for mode in modes}
    pin_mmap_threshold(settings[modes[0]].malloc_mmap_threshold)
    apps: dict[str, Any] = {mode: create_app(settings[mode], serving=True) for mode in modes}
    results: dict[str, list[float]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        cases: dict[str, dict[str, Any]] = {mode: _cases(app) for mode, app in apps.items()}
        for name in cases[modes[0]]:
            if only and only not in name:
                continue
            for mode in modes:
                await _measure(apps[mode], 200, cases[mode][name], in_flight)  # warm caches
            for _ in range(repeat):
                for mode in modes:
                    key = f"{name} (log {mode})" if len(modes) > 1 else name
                    runs = results.setdefault(key, [])
                    runs.append(await _measure(apps[mode], n, cases[mode][name], in_flight))
    # The least CPU a run took: other load on the machine only ever adds to it.
    return {name: min(values) for name, values in results.items()}


def _cases(app: Any) -> dict[str, Any]:
    version = app.state.gateway.catalog.get("demo").banner_version
    json_headers = [*HEADERS, (b"content-type", b"application/json")]

    def get(path: str) -> Any:
        return lambda i: (_scope(app, "GET", path, HEADERS), b"", 200)

    def post(i: int) -> tuple[dict[str, Any], bytes, int]:
        secret = f"{i:016x}{time.monotonic_ns() & (2**64 - 1):016x}"
        body = orjson.dumps({
            "subject_secret": secret, "banner_version": version,
            "action": "custom", "choices": {"analytics": True, "marketing": False,
                                            "personalization": True},
            "channel": "web", "language": "en", "page_url": "https://shop.example/checkout",
        })  # fmt: skip
        return _scope(app, "POST", "/v1/sites/demo/consents", json_headers, i), body, 201

    def preferences(i: int) -> tuple[dict[str, Any], bytes, int]:
        secret = f"{i:016x}{time.monotonic_ns() & (2**64 - 1):016x}"
        body = orjson.dumps({
            "subject_secret": secret, "product_line": "shop", "language": "en",
            "preferences": {"channels": {"email": True, "sms": False},
                            "topics": {"offers": {"enabled": True, "frequency": "weekly"},
                                       "newsletter": {"enabled": False}}},
        })  # fmt: skip
        return _scope(app, "POST", "/v1/sites/demo/preferences", json_headers, i), body, 201

    return {
        "config": get("/v1/sites/demo/config"),
        "consent.js": get("/v1/sites/demo/consent.js"),
        "POST consents": post,
        "POST preferences": preferences,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=5000, help="requests per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (the least)")
    parser.add_argument("--only", default="", help="only the cases whose name contains this")
    parser.add_argument(
        "--access-log",
        default="errors",
        help="GATEWAY_ACCESS_LOG modes to compare, e.g. errors,off",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=1,
        help="requests at once (default 1: sequential, so each POST is its own fsync'd group; "
        "64: as bench.record's wrk holds them, so POSTs share group commits)",
    )
    args = parser.parse_args()
    if args.in_flight < 1:
        parser.error("--in-flight must be at least 1")
    modes = tuple(args.access_log.split(","))
    found = asyncio.run(run(args.n, args.repeat, args.only, modes, args.in_flight))
    how = f"least of {args.repeat}" + (
        f", {args.in_flight} in flight" if args.in_flight > 1 else ""
    )
    for name, micros in found.items():
        print(f"{name:<28} {micros:7.1f} us CPU per request (in-process, {how})")
    if "off" in modes and len(modes) > 1:
        for name in {k.split(" (log")[0] for k in found}:
            off = found[f"{name} (log off)"]
            for mode in modes:
                if mode != "off":
                    cost = found[f"{name} (log {mode})"] / off - 1
                    print(f"{name}: access log {mode} costs {cost * 100:+.1f} % CPU vs off")


if __name__ == "__main__":
    main()
