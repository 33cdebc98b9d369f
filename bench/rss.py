"""Memory of a worker after many recorded consents (issue 15: RSS <= 80 MB after 1M).

Run ``.venv/bin/python -m bench.rss [--consents 1000000]``. It starts the gateway as README
runs it (``consent-gateway serve``, one worker, the embedded store, default durability) and
POSTs durable consents with wrk (64 connections, a new subject each, as bench.record) in
rounds until that many were answered 201, reading the worker's VmRSS and VmHWM from /proc
after the warm-up and after every round; the forwarder moves the records into the embedded
store meanwhile, in the same process. It prints the figures and whether the last RSS is
within the bound.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx

from bench.harness import as_make_run, free_port, gateway_command, gateway_env, stop
from bench.record import FIELDS, OPS_TOKEN, _drained, _start, _wrk, lua_script

BOUND_MB = 80.0


def memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consents", type=int, default=1_000_000)
    parser.add_argument("--round-seconds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cg-rss-") as tmp:
        as_make_run(tmp)
        env = gateway_env({
            "GATEWAY_DATA_DIR": tmp,
            "GATEWAY_OPS_TOKEN": OPS_TOKEN,
            "GATEWAY_WORKERS": "1",
            # wrk is one client address (BENCH_SETTINGS says why these two).
            "GATEWAY_CLIENT_WRITES_PER_MINUTE": str(10**12),
            "GATEWAY_CLIENT_WRITE_BURST": str(10**12),
        })  # fmt: skip
        port = free_port()
        proc = _start(gateway_command(port), port, env)
        try:
            version = httpx.get(f"http://127.0.0.1:{port}/v1/sites/demo/config").json()[
                "banner_version"
            ]
            script = Path(tmp) / "post.lua"
            fields = FIELDS["consents"] % {"version": version}
            script.write_text(lua_script(fields))
            _wrk(port, 64, 2, script)  # warm-up: imports, caches, the outbox's first pages
            _drained(port)
            start_rss, _ = memory(proc.pid)
            print(f"after warm-up: RSS {start_rss:.1f} MB")
            recorded = 0
            while recorded < args.consents:
                run = _wrk(port, 64, args.round_seconds, script)
                recorded += run["requests"] - run["non2xx"] - run["socket_errors"]
                rss, hwm = memory(proc.pid)
                print(
                    f"{recorded:>9} consents  {run['rps']:>7.0f} rps  "
                    f"non-2xx {run['non2xx']}  RSS {rss:.1f} MB  peak {hwm:.1f} MB",
                    flush=True,
                )
            _drained(port, limit=600)
            rss, hwm = memory(proc.pid)
            verdict = "within" if rss <= BOUND_MB else "OVER"
            print(
                f"after {recorded} consents, outbox drained: RSS {rss:.1f} MB (start "
                f"{start_rss:.1f}), peak {hwm:.1f} MB: {verdict} the {BOUND_MB:.0f} MB bound"
            )
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
