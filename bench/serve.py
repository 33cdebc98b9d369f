"""Serving benchmark: config and consent.js against a bare Starlette endpoint, same run.

Run: `.venv/bin/python -m bench.serve` (needs wrk). Target: ≥ 0.8x bare throughput, p99 ≤ 2x.
"""

from __future__ import annotations

import argparse
import os
import urllib.request

from bench.harness import ROOT, Result, server, temp_data_dir, wrk

HEADERS = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.8", "CF-IPCountry": "DE"}


def _size(url: str) -> int:
    req = urllib.request.Request(url, headers=HEADERS)
    with urllib.request.urlopen(req) as r:
        return len(r.read())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", default="16,64")
    args = parser.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    env = {"GATEWAY_DATA_DIR": temp_data_dir(), "GATEWAY_RELOAD": "false",
           "GATEWAY_BANNERS_DIR": str(ROOT / "banners"),
           "GATEWAY_LOCALES_DIR": str(ROOT / "locales")}
    results: list[tuple[Result, Result]] = []
    with server("gateway.app:factory", factory=True, env=env, ready_path="/healthz") as gw:
        sizes = {path: _size(gw + path) for path in
                 ("/v1/sites/demo/config", "/v1/sites/demo/consent.js")}
        gateway_runs = {(path, c): wrk(path.rsplit("/", 1)[-1], gw + path, c, args.seconds,
                                       headers=HEADERS)
                        for path in sizes for c in conns}
    for path, size in sizes.items():
        media = "application/json" if path.endswith("config") else "text/javascript"
        bare_env = {"BARE_BODY_BYTES": str(size), "BARE_MEDIA_TYPE": media}
        with server("bench.bare:app", env=bare_env) as bare:
            for c in conns:
                base = wrk(f"bare ({size} B)", bare + "/", c, args.seconds, headers=HEADERS)
                results.append((base, gateway_runs[(path, c)]))
    print(f"uvicorn, 1 worker, uvloop + httptools, server on CPU 0, wrk on CPU 1 "
          f"({os.cpu_count()} CPUs); {args.seconds} s per run")
    for base, gw_result in results:
        print(base.row())
        print(gw_result.row(base))


if __name__ == "__main__":
    main()
