"""CPU per request with N workers against one worker (issue 15: within 10 %).

Run ``.venv/bin/python -m bench.workers [--workers 2] [--seconds 8] [--rounds 3]``. It starts
``consent-gateway serve --workers 1`` and ``--workers N`` as README tells users (alternating,
a fresh data dir each run), loads each with wrk (64 keep-alive connections, one thread) on
the config endpoint and on durable consent POSTs, and reads the CPU time (user + system,
from /proc) of the whole server process tree: the supervisor, the workers and their fsync
helpers, reaped children included. The forwarder's work for the records of a run (into the
embedded store) is counted too: the run ends when the outbox is empty. Load generator and
servers share this machine's cores, so throughput is not the measure; CPU per request is.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import httpx

from bench.harness import (
    ROOT,
    as_make_run,
    free_port,
    gateway_command,
    gateway_env,
    stop,
)

OPS = {"Authorization": "Bearer bench-ops-token"}
ORIGIN = "http://127.0.0.1:8000"
_TICK = os.sysconf("SC_CLK_TCK")
EXTRA: dict[str, str] = {}
_SOCKET_ERRORS = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"

# The wrk script's start: a counter per thread, its thread number, JSON POSTs from ORIGIN
# (a %-template: the request() that follows it builds the body).
LUA_PRELUDE = r"""
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Origin"] = "%(origin)s"
end
"""

POST_LUA = (
    LUA_PRELUDE
    + r"""function request()
  counter = counter + 1
  local body = string.format(
    '{"subject_secret":"%%08d%%024d","banner_version":"%(version)s","action":"custom",' ..
    '"choices":{"analytics":true,"marketing":false,"personalization":true},' ..
    '"channel":"web","language":"en","page_url":"https://shop.example/checkout"%(key)s}',
    tid, counter%(key_args)s)
  return wrk.format(nil, nil, nil, body)
end
"""
)
# The "keyed" endpoint: each POST carries an idempotency key of its own, as the snippet sends
# one with every choice (with several workers, each key is claimed, looked up and published
# in the memory the workers share, recording/recent_keys.py: this is what that costs).
_KEYED = {"key": ',"idempotency_key":"k%08d-%08d"', "key_args": ", tid, counter"}
_UNKEYED = {"key": "", "key_args": ""}


class Run(NamedTuple):
    workers: int
    endpoint: str
    requests: int
    rps: float
    cpu_us: float  # server CPU per request, microseconds
    errors: int
    parts: dict[str, float]  # CPU per request by kind of process (where the cost goes)
    counts: dict[str, float]  # outbox commits, fsyncs and forwarder batches per request


def tree(pid: int) -> list[int]:
    """The process and its descendants."""
    found = [pid]
    for p in found:
        for task in Path(f"/proc/{p}/task").glob("*"):  # a thread's children are its own
            try:
                found += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the tree by kind of process: each one's own and its reaped children's."""
    kinds: dict[str, float] = {}
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        kind = "main process" if p == pid else "fsync helper" if b"-I\0-S" in command else "workers"
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        kinds[kind] = kinds.get(kind, 0.0) + ticks / _TICK
    return kinds


_COUNTED = ("consent_outbox_commits_total", "consent_outbox_syncs_total",
            "consent_forwarder_batches_total")  # fmt: skip


def counters(base: str) -> dict[str, float]:
    """The outbox and forwarder counters, summed over the workers."""
    text = httpx.get(base + "/metrics", headers=OPS).text
    sums = dict.fromkeys(_COUNTED, 0.0)
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


def _env(data_dir: str, workers: int) -> dict[str, str]:
    env = gateway_env({
        "GATEWAY_DATA_DIR": data_dir,
        "GATEWAY_WORKERS": str(workers),
        "GATEWAY_OPS_TOKEN": OPS["Authorization"].split()[1],
        # wrk is one client address (BENCH_SETTINGS says why these two).
        "GATEWAY_CLIENT_WRITES_PER_MINUTE": str(10**12),
        "GATEWAY_CLIENT_WRITE_BURST": str(10**12),
    })  # fmt: skip
    env.update(EXTRA)
    return env


def _wait(base: str, workers: int, pid: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200 and (
                workers == 1 or len(tree(pid)) > workers
            ):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the gateway did not start")


def _drained(base: str, workers: int) -> None:
    """Until every worker's outbox is empty (each /readyz answers for one worker)."""
    deadline = time.monotonic() + 60
    empty = 0
    while time.monotonic() < deadline and empty < 4 * workers:
        depth = httpx.get(base + "/readyz", headers=OPS).json()["recording"]["outbox_depth"]
        empty = empty + 1 if depth == 0 else 0
        time.sleep(0.05)


def _wrk(url: str, seconds: int, script: str | None, connections: int) -> tuple[int, float, int]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", *(["-s", script] if script else []),
           url]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if found := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(found.group(1))
    if found := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(g) for g in found.groups())
    return requests, rps, errors


def measure(workers: int, endpoint: str, seconds: int, connections: int = 64) -> Run:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="cg-bench-workers-") as data_dir:
        as_make_run(data_dir)
        proc = subprocess.Popen(
            gateway_command(port), cwd=ROOT, env=_env(data_dir, workers),
        )  # fmt: skip
        try:
            _wait(base, workers, proc.pid)
            script = None
            url = f"{base}/v1/sites/demo/config?region=DE"
            if endpoint in ("consent", "keyed"):
                version = httpx.get(url).json()["banner_version"]
                script = str(Path(data_dir) / "post.lua")
                key = _KEYED if endpoint == "keyed" else _UNKEYED
                Path(script).write_text(POST_LUA % {"origin": ORIGIN, "version": version, **key})
                url = f"{base}/v1/sites/demo/consents"
            _wrk(url, 2, script, connections)  # warm-up: memos, caches, connections
            _drained(base, workers)
            before, counted = tree_cpu(proc.pid), counters(base)
            requests, rps, errors = _wrk(url, seconds, script, connections)
            _drained(base, workers)  # the forwarding of this run's records is its cost too
            after, later = tree_cpu(proc.pid), counters(base)
        finally:
            stop(proc)
    per = max(1, requests)
    parts = {k: (v - before.get(k, 0.0)) / per * 1e6 for k, v in after.items()}
    counts = {k.split("_", 1)[1]: (later[k] - counted[k]) / per for k in _COUNTED}
    return Run(workers, endpoint, requests, rps, sum(parts.values()), errors, parts, counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--endpoint", action="append", choices=["config", "consent", "keyed"],
        help="default: config and consent; keyed: consent POSTs with an idempotency key each",
    )  # fmt: skip
    parser.add_argument(
        "--per-worker", action="store_true",
        help="64 connections per worker (clients grow with workers) instead of 64 in all",
    )  # fmt: skip
    parser.add_argument("--env", action="append", default=[], help="NAME=value for the gateway")
    args = parser.parse_args()
    EXTRA.update(item.split("=", 1) for item in args.env)
    for endpoint in args.endpoint or ["config", "consent"]:
        runs: dict[int, list[Run]] = {1: [], args.workers: []}
        for _ in range(args.rounds):
            for n in runs:  # alternating, so drift of the machine hits both alike
                run = measure(n, endpoint, args.seconds, 64 * n if args.per_worker else 64)
                runs[n].append(run)
                parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(run.parts.items()))
                counts = ", ".join(f"{k} {v:.3f}" for k, v in run.counts.items())
                print(f"  {endpoint:8} workers={n} {run.rps:8.0f} rps  {run.cpu_us:7.1f} µs CPU"
                      f"/request ({parts})  per request: {counts}  errors={run.errors}",
                      flush=True)  # fmt: skip
        one = statistics.median(r.cpu_us for r in runs[1])
        many = statistics.median(r.cpu_us for r in runs[args.workers])
        print(f"{endpoint}: CPU per request, median of {args.rounds}: 1 worker {one:.1f} µs, "
              f"{args.workers} workers {many:.1f} µs: {many / one:.2f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
