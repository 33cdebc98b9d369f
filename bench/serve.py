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

from bench.harness import CDN_EDGE, PIDS, Result, gateway, server, temp_data_dir, wrk

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
        statistics.median(r.cpu_us for r in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", default="16,64")
    parser.add_argument(
        "--log-modes",
        default="default,off",
        help="GATEWAY_ACCESS_LOG of each gateway run beside the bare endpoint; `default` is as "
        "shipped (no variable set)",
    )
    args = parser.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    modes = args.log_modes.split(",")
    base_env = CDN_EDGE  # wrk plays a Cloudflare edge on loopback (HEADERS' CF-IPCountry)
    with contextlib.ExitStack() as stack:
        gateways = {}
        for mode in modes:
            env = {**base_env, "GATEWAY_DATA_DIR": temp_data_dir()}
            if mode != "default":
                env["GATEWAY_ACCESS_LOG"] = mode
            gateways[mode] = stack.enter_context(gateway(env))
        first = gateways[modes[0]]
        bares = {}
        for path in PATHS:
            media = "application/json" if path.endswith("config") else "text/javascript"
            size = _size(first + path)
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
            "gateway: consent-gateway serve (access log: "
            f"{', '.join(modes)}); bare: uvicorn, uvloop + httptools; servers on CPU 0, wrk on "
            f"CPU 1 ({os.cpu_count()} CPUs); median of {args.repeat} alternating runs of "
            f"{args.seconds} s"
        )
        for path in PATHS:
            size, bare = bares[path]
            for c in conns:
                base_runs: list[Result] = []
                gw_runs: dict[str, list[Result]] = {mode: [] for mode in modes}
                for _ in range(args.repeat):
                    label = f"bare ({size} B)"
                    base_runs.append(
                        wrk(label, bare + "/", c, args.seconds, headers=HEADERS, pid=PIDS[bare])
                    )
                    for mode, gw in gateways.items():
                        name = f"{path.rsplit('/', 1)[-1]} log={mode}"
                        gw_runs[mode].append(
                            wrk(name, gw + path, c, args.seconds, headers=HEADERS, pid=PIDS[gw])
                        )
                base = median(base_runs)
                print(base.row())
                medians = {mode: median(runs) for mode, runs in gw_runs.items()}
                for result in medians.values():
                    print(result.row(base))
                if "off" in medians and len(medians) > 1:
                    off = medians["off"].rps
                    for mode, result in medians.items():
                        if mode != "off":
                            cost = 1 - result.rps / off
                            cpu = result.cpu_us / medians["off"].cpu_us - 1
                            print(
                                f"    access log {mode} vs off: {cost * 100:+.1f} % throughput, "
                                f"{cpu * 100:+.1f} % CPU per request"
                            )


if __name__ == "__main__":
    main()
