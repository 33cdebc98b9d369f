"""What the write limits cost per request: ``WriteLimits.check`` timed in-process.

Run ``.venv/bin/python -m bench.ratelimit``. Three cases: one busy client writing for
distinct subjects (the hot path of a flood that is under its limit), a table full of
distinct clients (each new key evicts the least recently used one), and IPv6 clients (the
/64 key is computed per request). ``bench.record --limits on|off`` measures the same under
HTTP load, where the differences drown in the machine's noise.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from gateway.core.ratelimit import WriteLimits
from gateway.core.settings import Settings

N = 200_000


def _time(label: str, limits: WriteLimits, call: Callable[[WriteLimits, int], None]) -> None:
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for i in range(N):
            call(limits, i)
        best = min(best, (time.process_time() - start) / N)
    print(f"{label:<52} {best * 1e9:7.0f} ns CPU per check (best of 5 x {N:,})")


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    big = Settings(client_writes_per_minute=10**12, client_write_burst=10**12)
    _time(
        "one client, distinct subjects",
        WriteLimits(big),
        lambda lim, i: lim.check("192.0.2.1", "demo", f"subject-{i}"),
    )
    full = Settings(rate_limit_clients=10_000)
    _time(
        "distinct clients past a 10,000-entry table (admin)",
        WriteLimits(full),
        lambda lim, i: lim.check_admin(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"),
    )
    _time(
        "IPv6 clients (key by /64)",
        WriteLimits(big),
        lambda lim, i: lim.check(f"2001:db8:{i & 0xFFFF:x}::1", "demo", f"subject-{i}"),
    )
    _time(
        "limits off (0)",
        WriteLimits(Settings(client_writes_per_minute=0, subject_writes_per_minute=0)),
        lambda lim, i: lim.check("192.0.2.1", "demo", f"subject-{i}"),
    )


if __name__ == "__main__":
    main()
