"""Recording benchmark: durable POST against a bare JSON endpoint, then forwarder throughput.

Run ``.venv/bin/python -m bench.record [--kind consents|preferences]``: a consent choice, or a
preference change (``POST /v1/sites/demo/preferences``), each request for a new subject. It
starts (a) a bare Starlette endpoint that parses the same JSON and stores nothing (uvicorn, one
worker, uvloop, httptools) and (b) the gateway started as README runs it
(``consent-gateway serve``) in its default durability mode, loads each with wrk at 16 and 64
connections, and prints rps, p50, p99 and the gateway/bare ratio. Then it fills an outbox and
times the forwarder draining it into a scratch PostgreSQL database (bench.forward).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.harness import (
    as_make_run,
    free_port,
    gateway_command,
    gateway_env,
    stop,
    uvicorn_command,
)
from bench.workers import LUA_PRELUDE, tree_cpu

ROOT = Path(__file__).resolve().parent.parent
OPS_TOKEN = "bench-ops-token"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
ORIGIN = "http://127.0.0.1:8000"

LUA = (
    LUA_PRELUDE
    + r"""function request()
  counter = counter + 1
  -- A subject secret per request (32 hex digits, as the snippet makes them): new subjects.
  local body = string.format('{"subject_secret":"%%08x%%08x0000000000000000",%(fields)s%(key)s}',
    tid, counter%(key_args)s)
  return wrk.format(nil, nil, nil, body)
end
function done(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests":%%d,"duration_us":%%d,"non2xx":%%d,"socket_errors":%%d,' ..
    '"p50_us":%%d,"p99_us":%%d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
)


# The request bodies after the subject secret, by kind (wrk's Lua escapes: %% for %).
FIELDS = {
    "consents": (
        '"banner_version":"%(version)s","action":"custom",'
        '"choices":{"analytics":true,"marketing":false,"personalization":true},'
        '"channel":"web","language":"en","page_url":"https://shop.example/checkout"'
    ),
    "preferences": (
        '"preferences":{"channels":{"email":true,"sms":false},'
        '"topics":{"offers":{"enabled":true,"frequency":"weekly"},'
        '"newsletter":{"enabled":false}}},"product_line":"shop","language":"en"'
    ),
}


async def _bare(request: Request) -> Response:
    body = orjson.loads(await request.body())
    answer = {"record_id": str(uuid.uuid4()), "subject_id": body["subject_secret"], "receipt": "x"}
    return Response(orjson.dumps(answer), 201, media_type="application/json")


# --keyed: each request with an idempotency key of its own, as the snippet sends every choice.
KEYED = {"key": ',"idempotency_key":"k%08x-%08x"', "key_args": ", tid, counter"}


def lua_script(fields: str, keyed: bool = False) -> str:
    """The wrk script that POSTs ``fields`` (one FIELDS entry, formatted) for a new subject
    each time, with an idempotency key each when ``keyed``."""
    keying = KEYED if keyed else {"key": "", "key_args": ""}
    return LUA % {"fields": fields.replace("%", "%%"), "origin": ORIGIN, **keying}


# The bare endpoint: same route shapes, parses the same JSON, stores nothing.
bare_app = Starlette(
    routes=[
        Route("/v1/sites/{site}/consents", _bare, methods=["POST"]),
        Route("/v1/sites/{site}/preferences", _bare, methods=["POST"]),
    ]
)


def _start(cmd: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server {cmd} did not start")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants (``serve`` runs a supervisor over
    its worker and fsync helper processes), with their threads, from /proc."""
    return sum(tree_cpu(pid).values())


def _wrk(
    port: int,
    connections: int,
    seconds: int,
    script: Path,
    pid: int | None = None,
    kind: str = "consents",
) -> dict[str, Any]:
    cpu_before = _cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
         f"http://127.0.0.1:{port}/v1/sites/demo/{kind}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    data: dict[str, Any] = json.loads(line[len("RESULT ") :])
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    if pid:
        # Server CPU per request: steadier than rps when other work shares the machine.
        data["cpu_us"] = (_cpu_seconds(pid) - cpu_before) / max(1, data["requests"]) * 1e6
    return data


def _drained(port: int, limit: float = 30.0) -> None:
    """Wait until the gateway's forwarder has emptied the outbox, so its catch-up work never
    runs during the next (bare) run and flatters the ratio."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", headers=OPS)
        health = ready.json().get("recording", {})
        if not health.get("outbox_depth"):
            return
        time.sleep(0.1)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def http_bench(
    seconds: int,
    connections: tuple[int, ...],
    durability: str,
    repeat: int = 3,
    limits: bool = True,
    kind: str = "consents",
    keyed: bool = False,
) -> dict[str, Any]:
    """Load the bare endpoint and the gateway; returns medians by (app, connections).

    Both servers run at once and their runs alternate (bare, gateway, bare, ...), so drift in
    the machine's load hits both alike; each figure is the median of ``repeat`` runs. Both
    get the same wrk script and body (only the banner version differs, and the bare endpoint
    ignores it) and the same warm-up.
    """
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="cg-bench-") as tmp:
        as_make_run(tmp)
        env = gateway_env({
            "GATEWAY_DATA_DIR": tmp,
            "GATEWAY_DURABILITY": durability,
            "GATEWAY_OPS_TOKEN": OPS_TOKEN,
            # One worker, as the bare endpoint has (bench.workers compares worker counts).
            "GATEWAY_WORKERS": "1",
            # wrk is one client address: with limits on, the per-client bucket is checked on
            # every request but set so high that it never refuses (what the limiter costs);
            # each request has its own subject, so the per-subject bucket keeps its default.
            "GATEWAY_CLIENT_WRITES_PER_MINUTE": str(10**12 if limits else 0),
            "GATEWAY_CLIENT_WRITE_BURST": str(10**12),
            "GATEWAY_SUBJECT_WRITES_PER_MINUTE": "12" if limits else "0",
        })  # fmt: skip
        env["PYTHONPATH"] = str(ROOT)  # the bare app, bench.record:bare_app
        # The gateway as shipped (`consent-gateway serve`), the bare app under plain uvicorn.
        targets = {
            "bare": lambda port: uvicorn_command("bench.record:bare_app", port),
            "gateway": gateway_command,
        }
        servers: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
        try:
            for name, target in targets.items():
                port = free_port()
                servers[name] = (_start(target(port), port, env), port, Path(tmp) / f"{name}.lua")
            config = httpx.get(f"http://127.0.0.1:{servers['gateway'][1]}/v1/sites/demo/config")
            version = config.json()["banner_version"]
            for _, port, script in servers.values():
                fields = FIELDS[kind] % {"version": version}
                script.write_text(lua_script(fields, keyed))
                # warm-up: imports, caches, the outbox's first pages
                _wrk(port, 64, 2, script, kind=kind)
                _drained(servers["gateway"][1])
            for _ in range(repeat):
                for c in connections:
                    for name, (proc, port, script) in servers.items():
                        _drained(servers["gateway"][1])
                        runs.setdefault(f"{name}@{c}", []).append(
                            _wrk(port, c, seconds, script, proc.pid, kind)
                        )
        finally:
            for proc, _, _ in servers.values():
                stop(proc)
    medians = {key: _median(values) for key, values in runs.items()}
    for key, values in runs.items():
        medians[key]["p99s"] = [round(r["p99_us"] / 1000, 1) for r in values]
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per run")
    parser.add_argument("--durability", default="power", choices=["power", "process"])
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs per figure")
    parser.add_argument("--records", type=int, default=200_000, help="forwarder bench size")
    parser.add_argument("--forwarder-runs", type=int, default=3, help="median of this many")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--kind", default="consents", choices=sorted(FIELDS))
    parser.add_argument("--skip-forwarder", action="store_true")
    parser.add_argument(
        "--keyed", action="store_true", help="an idempotency key in every POST, as the snippet"
    )
    parser.add_argument(
        "--limits",
        default="on",
        choices=["on", "off"],
        help="write limits checked on every request (never refusing) or switched off",
    )
    args = parser.parse_args()
    connections = (16, 64)
    if not args.skip_http:
        results = http_bench(
            args.seconds, connections, args.durability, args.repeat, args.limits == "on",
            args.kind, args.keyed,
        )  # fmt: skip
        print(
            f"POST /v1/sites/demo/{args.kind}{' with idempotency keys' if args.keyed else ''}, "
            f"durability={args.durability}, limits {args.limits}, "
            f"median of {args.repeat} alternating runs of {args.seconds}s"
        )
        print(
            f"{'app':<10}{'conns':>6}{'rps':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
            f"{'cpu us/req':>12}  p99 of each run"
        )
        for key, r in results.items():
            app, conns = key.split("@")
            print(
                f"{app:<10}{conns:>6}{r['rps']:>10.0f}{r['p50_us'] / 1000:>9.2f}"
                f"{r['p99_us'] / 1000:>9.2f}{r['non2xx'] + r['socket_errors']:>8}"
                f"{r['cpu_us']:>12.0f}  {r['p99s']}"
            )
        for c in connections:
            ratio = results[f"gateway@{c}"]["rps"] / results[f"bare@{c}"]["rps"]
            cpu = results[f"bare@{c}"]["cpu_us"] / results[f"gateway@{c}"]["cpu_us"]
            print(
                f"gateway/bare at {c} connections: {ratio:.2f}x throughput, "
                f"{cpu:.2f}x by server CPU per request"
            )
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if not args.skip_forwarder:
        from bench.forward import forwarder_bench, report

        print(report(asyncio.run(forwarder_bench(args.records, args.forwarder_runs))))


if __name__ == "__main__":
    main()
