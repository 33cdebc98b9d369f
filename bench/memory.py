"""Memory under the security review's cache attacks (§5): RSS before and after each one.

Run: `.venv/bin/python -m bench.memory`. Each attack gets a fresh gateway started as README
runs it (`consent-gateway serve`) on the repository's demo site; the requests go over one
keep-alive connection and the server's VmRSS is read from /proc before and after. The review
measured, before the fix: distinct 60 KB queries 72 → 1,023 MB (20,000 requests), distinct 4 MB
If-None-Match 72 → 1,605 MB (400), distinct Host on consent.js 72 → 363 MB (200,000).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.harness import ROOT, free_port, gateway_command, gateway_env, stop, temp_data_dir

Request = tuple[str, dict[str, str]]


def wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the gateway on port {port} did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def attacks(n: int) -> dict[str, Callable[[], Iterator[Request]]]:
    config, js = "/v1/sites/demo/config", "/v1/sites/demo/consent.js"
    return {
        "distinct 4 KB queries": lambda: (
            (f"{config}?region=DE&n{i}={'p' * 4000}", {}) for i in range(n)
        ),
        "distinct 60 KB queries": lambda: (
            (f"{config}?region=DE&n{i}={'p' * 60000}", {}) for i in range(n // 10)
        ),
        "distinct 4 MB If-None-Match": lambda: (
            (config, {"If-None-Match": f'"{i}{"x" * (4 << 20)}"'}) for i in range(400)
        ),
        "distinct 4 KB If-None-Match": lambda: (
            (config + "?region=DE", {"If-None-Match": f'"{i}{"x" * 4000}"'}) for i in range(n)
        ),
        "distinct Host on consent.js": lambda: (
            (js + "?region=DE", {"Host": f"h{i}.example"}) for i in range(n)
        ),
    }


def run(name: str, requests: Iterator[Request]) -> str:
    port = free_port()
    env = gateway_env({"GATEWAY_DATA_DIR": temp_data_dir()})
    cmd = gateway_command(port)  # as README tells users to run it
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        wait_ready(port)
        before = rss_mb(proc.pid)
        statuses: collections.Counter[int] = collections.Counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start = time.monotonic()
        for path, headers in requests:
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                statuses[response.status] += 1
                if response.will_close:
                    conn.close()
            except (ConnectionError, http.client.HTTPException):
                statuses[0] += 1  # the server closed the connection
                conn.close()
        seconds = time.monotonic() - start
        time.sleep(1)
        after = rss_mb(proc.pid)
    finally:
        stop(proc)
    counts = dict(sorted(statuses.items()))
    return (
        f"{name:<30} {sum(statuses.values()):>6} requests in {seconds:5.1f} s  "
        f"RSS {before:6.1f} -> {after:6.1f} MB  statuses {counts}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20_000, help="requests per attack")
    parser.add_argument("--only", default="", help="only attacks whose name contains this")
    args = parser.parse_args()
    for name, make in attacks(args.n).items():
        if args.only in name:
            print(run(name, make()), flush=True)


if __name__ == "__main__":
    main()
