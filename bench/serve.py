"""Serving benchmark: config and consent.js against a bare Starlette endpoint, same run.

Run: `.venv/bin/python -m bench.serve` (needs wrk). Target: >= 0.8x bare throughput, p99 <= 2x.
Bare and gateway runs alternate and each figure is the median of `--repeat` runs, so drift in
the machine's load hits both sides alike.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import urllib.request

from bench.harness import ROOT, Result, gateway, server, temp_data_dir, wrk

HEADERS = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.8", "CF-IPCountry": "DE"}
PATHS = ("/v1/sites/demo/config", "/v1/sites/demo/consent.js")


def _size(url: str) -> int:
    req = urllib.request.Request(url, headers=HEADERS)
    with urllib.request.urlopen(req) as r:
        return len(r.read())


def median(results: list[Result]) -> Result:
    first = results[0]
    return Result(
        first.name,
        first.connections,
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", default="16,64")
    args = parser.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    env = {
        "GATEWAY_DATA_DIR": temp_data_dir(),
        "GATEWAY_RELOAD": "false",
        "GATEWAY_BANNERS_DIR": str(ROOT / "banners"),
        "GATEWAY_LOCALES_DIR": str(ROOT / "locales"),
        # wrk plays a Cloudflare edge on loopback, so CF-IPCountry decides the region.
        "GATEWAY_TRUSTED_PROXIES": "127.0.0.1",
        "GATEWAY_GEO_HEADERS": "cloudflare",
    }
    with contextlib.ExitStack() as stack:
        gw = stack.enter_context(gateway(env))
        bares = {}
        for path in PATHS:
            media = "application/json" if path.endswith("config") else "text/javascript"
            size = _size(gw + path)
            bares[path] = (
                size,
                stack.enter_context(
                    server(
                        "bench.bare:app",
                        env={"BARE_BODY_BYTES": str(size), "BARE_MEDIA_TYPE": media},
                    )
                ),
            )
        print(
            "gateway: consent-gateway serve; bare: uvicorn, uvloop + httptools; "
            f"servers on CPU 0, wrk on CPU 1 "
            f"({os.cpu_count()} CPUs); median of {args.repeat} alternating runs of "
            f"{args.seconds} s"
        )
        for path in PATHS:
            size, bare = bares[path]
            for c in conns:
                base_runs, gw_runs = [], []
                for _ in range(args.repeat):
                    base_runs.append(
                        wrk(f"bare ({size} B)", bare + "/", c, args.seconds, headers=HEADERS)
                    )
                    gw_runs.append(
                        wrk(path.rsplit("/", 1)[-1], gw + path, c, args.seconds, headers=HEADERS)
                    )
                base = median(base_runs)
                print(base.row())
                print(median(gw_runs).row(base))


if __name__ == "__main__":
    main()
