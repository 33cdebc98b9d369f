"""Soak: mixed visitor load with hostile requests mixed in, against `consent-gateway serve`.

Run ``.venv/bin/python -m bench.soak --seconds 600``. It starts the gateway the way the README
tells users to (``consent-gateway serve`` from the project folder, on a fresh data dir, behind
a "proxy" at 127.0.0.1 so that each simulated visitor has its own address), then for the
given time keeps up

- visitors: GET config, consent.js and banner in several languages and regions, and POST
  consents with fresh subjects, each from its own address;
- one flooder: POSTs as fast as it can from a single address (the rate limit's 429s);
- hostile requests: huge headers, huge queries, many Host values, bad JSON, unsupported
  transfer codings, idle connections, slow heads and slow bodies.

Every 5 s it samples the server's RSS, open descriptors and outbox WAL size. It prints the
figures and a verdict: RSS at the end within 20 % of the start (after a warm-up), the WAL
under its bound, no 5xx, and visitors served throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import random
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.harness import as_make_run, free_port, gateway_command, gateway_env, stop

ROOT = Path(__file__).resolve().parent.parent
SITE = "demo"
LANGS = ("en", "de", "fr", "es", "zh-CN", "ar", "pt-BR", "ja")
REGIONS = ("DE", "US-CA", "GB", "FR", "BR", "CN", "JP", "US-TX", "IN", "AU")


class Tally:
    """Status counts per kind of traffic, with 5xx and transport errors apart."""

    def __init__(self) -> None:
        self.status: dict[str, Counter[int]] = {}
        self.errors: Counter[str] = Counter()
        self.latency: dict[str, list[float]] = {}

    def add(self, kind: str, status: int, seconds: float | None = None) -> None:
        self.status.setdefault(kind, Counter())[status] += 1
        if seconds is not None:
            self.latency.setdefault(kind, []).append(seconds)

    def fives(self) -> int:
        return sum(n for c in self.status.values() for s, n in c.items() if s >= 500)


class Conn:
    """One keep-alive HTTP/1.1 connection with just enough parsing for the soak."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes, limit: float = 15.0) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port, limit=1 << 20
            )
        assert self.reader is not None
        self.writer.write(raw)
        try:
            async with asyncio.timeout(limit):
                head = await self.reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length, close = 0, False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                body = await self.reader.readexactly(length) if length else b""
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = None


def _ip(rng: random.Random) -> str:
    # Documentation and public-looking ranges; distinct visitors, a few per /24.
    return (
        f"{rng.randint(11, 199)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    )


def _get(path: str, headers: dict[str, str], host: str = "127.0.0.1") -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _post(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _consent(version: str, visitor: str) -> bytes:
    # As the snippet and apps record: the visitor's own secret (the gateway derives the
    # subject id from it and refuses a client-chosen one).
    secret = hashlib.sha256(visitor.encode()).hexdigest()[:32]
    return json.dumps({
        "subject_secret": secret, "banner_version": version, "action": "custom",
        "choices": {"analytics": True, "marketing": False, "personalization": True},
        "channel": "web", "language": "en", "page_url": "https://shop.example/checkout",
    }).encode()  # fmt: skip


async def visitor_gets(port: int, tally: Tally, stop_at: float, seed: int) -> None:
    rng = random.Random(seed)
    conn = Conn(port)
    while time.monotonic() < stop_at:
        kind = rng.choice(("config", "consent.js", "banner"))
        headers = {"Accept-Language": rng.choice(LANGS), "X-Forwarded-For": _ip(rng)}
        query = f"?region={rng.choice(REGIONS)}" if rng.random() < 0.5 else ""
        start = time.monotonic()
        try:
            status, _ = await conn.request(_get(f"/v1/sites/{SITE}/{kind}{query}", headers))
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            tally.errors[f"visitor_get {type(exc).__name__}"] += 1
            continue
        tally.add("visitor_get", status, time.monotonic() - start)


async def visitor_posts(port: int, tally: Tally, stop_at: float, seed: int, version: str) -> None:
    rng = random.Random(seed)
    conn = Conn(port)
    counter = itertools.count()
    while time.monotonic() < stop_at:
        body = _consent(version, f"soak-{seed}-{next(counter)}")
        headers = {"Content-Type": "application/json", "X-Forwarded-For": _ip(rng)}
        start = time.monotonic()
        try:
            status, _ = await conn.request(_post(f"/v1/sites/{SITE}/consents", body, headers))
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            tally.errors[f"visitor_post {type(exc).__name__}"] += 1
            continue
        tally.add("visitor_post", status, time.monotonic() - start)
        await asyncio.sleep(0.002)


async def flooder(port: int, tally: Tally, stop_at: float, version: str) -> None:
    conn = Conn(port)
    counter = itertools.count()
    while time.monotonic() < stop_at:
        body = _consent(version, f"flood-{next(counter)}")
        headers = {"Content-Type": "application/json", "X-Forwarded-For": "203.0.113.66"}
        try:
            status, _ = await conn.request(_post(f"/v1/sites/{SITE}/consents", body, headers))
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            tally.errors[f"flood {type(exc).__name__}"] += 1
            continue
        tally.add("flood", status)


async def _one_shot(port: int, raw: bytes) -> int:
    conn = Conn(port)
    try:
        status, _ = await conn.request(raw)
        return status
    finally:
        conn.close()


async def _slow(port: int, parts: list[bytes], pause: float) -> str:
    """Send a request in parts with pauses; what the server did: answered, closed, or held."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
            if reader.at_eof():
                break
        async with asyncio.timeout(30):
            data = await reader.read(200)
        return f"answered {data.split(b' ', 2)[1].decode()}" if data else "closed"
    except ConnectionResetError:
        return "closed"  # the server closed it (a timeout) while parts were still coming
    except (OSError, TimeoutError) as exc:
        return f"error {type(exc).__name__}"
    finally:
        writer.close()


async def hostile(port: int, tally: Tally, stop_at: float, seed: int, version: str) -> None:
    rng = random.Random(seed)
    path = f"/v1/sites/{SITE}"
    cases: dict[str, Callable[[], Awaitable[int | str]]] = {
        "huge_header": lambda: _one_shot(
            port,
            _get(
                f"{path}/config", {"If-None-Match": '"' + "x" * rng.randint(8_000, 200_000) + '"'}
            ),
        ),
        "huge_query": lambda: _one_shot(
            port, _get(f"{path}/config?lang=de&n{rng.randint(0, 10**9)}=" + "p" * 60_000, {})
        ),
        "many_hosts": lambda: _one_shot(
            port, _get(f"{path}/consent.js", {}, host=f"h{rng.randint(0, 10**9)}.example")
        ),
        "bad_json": lambda: _one_shot(
            port,
            _post(
                f"{path}/consents",
                b'{"subject_id": "x", "choices": {' + os.urandom(40),
                {"Content-Type": "application/json", "X-Forwarded-For": _ip(rng)},
            ),
        ),
        "te_gzip": lambda: _one_shot(
            port,
            (
                f"POST {path}/consents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                "application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            ).encode()
            + b"5\r\nhello\r\n0\r\n\r\n",
        ),
        "long_language": lambda: _one_shot(
            port,
            _get(f"{path}/consent.js", {"Accept-Language": f"de-DE-x-{rng.randint(0, 10**9)}"}),
        ),
        "slow_head": lambda: _slow(
            port, [b"GET /healthz HTTP/1.1\r\n", b"Host: a\r\n", b"X-a: b\r\n"] * 5, 1.0
        ),
        "slow_body": lambda: _slow(
            port,
            [
                _post(
                    f"{path}/consents",
                    _consent(version, "slow"),
                    {"Content-Type": "application/json"},
                )[:-40]
            ]
            + [b" "] * 20,
            1.0,
        ),
        "idle": lambda: _slow(port, [b""], 0.1),
    }
    names = list(cases)
    pending: set[asyncio.Task[Any]] = set()
    while time.monotonic() < stop_at:
        name = rng.choice(names)

        async def run(name: str = name) -> None:
            try:
                result = await cases[name]()
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                tally.errors[f"hostile {name} {type(exc).__name__}"] += 1
                return
            if isinstance(result, int):
                tally.add(f"hostile {name}", result)
            else:
                tally.errors[f"hostile {name} {result}"] += 1
                if result.startswith("answered "):
                    tally.add(f"hostile {name}", int(result.split()[1]))

        task = asyncio.create_task(run())
        pending.add(task)
        task.add_done_callback(pending.discard)
        await asyncio.sleep(0.05 if name in ("slow_head", "slow_body", "idle") else 0.01)
    await asyncio.gather(*pending, return_exceptions=True)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _size_mb(path: Path) -> float:
    try:
        return path.stat().st_size / 2**20
    except FileNotFoundError:
        return 0.0


async def sampler(
    pid: int, data_dir: Path, stop_at: float, samples: list[dict[str, float]]
) -> None:
    start = time.monotonic()
    while time.monotonic() < stop_at:
        samples.append({
            "t": round(time.monotonic() - start, 1),
            "rss_mb": round(_rss_mb(pid), 1),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "wal_mb": round(_size_mb(data_dir / "outbox.sqlite3-wal"), 2),
            "outbox_mb": round(_size_mb(data_dir / "outbox.sqlite3"), 2),
        })  # fmt: skip
        await asyncio.sleep(5)


async def _version(port: int) -> str:
    conn = Conn(port)
    status, body = await conn.request(_get(f"/v1/sites/{SITE}/config", {}))
    conn.close()
    assert status == 200, status
    return str(json.loads(body)["banner_version"])


async def load(
    port: int, pid: int, data_dir: Path, seconds: float, warmup: float, visitors: int
) -> dict[str, Any]:
    version = await _version(port)
    tally = Tally()
    # Warm-up: the same visitor mix, so that start-of-run RSS includes the steady caches.
    warm_until = time.monotonic() + warmup
    await asyncio.gather(
        *(visitor_gets(port, Tally(), warm_until, 1000 + i) for i in range(visitors)),
        visitor_posts(port, Tally(), warm_until, 2000, version),
    )
    rss_start = _rss_mb(pid)
    stop_at = time.monotonic() + seconds
    samples: list[dict[str, float]] = []
    await asyncio.gather(
        sampler(pid, data_dir, stop_at, samples),
        *(visitor_gets(port, tally, stop_at, i) for i in range(visitors)),
        *(visitor_posts(port, tally, stop_at, 100 + i, version) for i in range(2)),
        flooder(port, tally, stop_at, version),
        hostile(port, tally, stop_at, 7, version),
    )
    await asyncio.sleep(2)
    rss_end = _rss_mb(pid)
    latencies = {k: sorted(v) for k, v in tally.latency.items()}
    return {
        "seconds": seconds,
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_max_mb": max(s["rss_mb"] for s in samples) if samples else None,
        "rss_growth_pct": round((rss_end - rss_start) / rss_start * 100, 1),
        "wal_max_mb": max((s["wal_mb"] for s in samples), default=0.0),
        "wal_end_mb": _size_mb(data_dir / "outbox.sqlite3-wal"),
        "fds_max": max((s["fds"] for s in samples), default=0),
        "status": {k: dict(sorted(v.items())) for k, v in sorted(tally.status.items())},
        "five_xx": tally.fives(),
        "transport": dict(sorted(tally.errors.items())),
        "p50_ms": {k: round(v[len(v) // 2] * 1000, 2) for k, v in latencies.items() if v},
        "p99_ms": {k: round(v[int(len(v) * 0.99)] * 1000, 2) for k, v in latencies.items() if v},
        "samples": samples,
    }


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}")
        try:
            asyncio.run(_one_shot(port, _get("/healthz", {})))
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the gateway did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument(
        "--warmup", type=float, default=60, help="seconds of load before the start RSS is read"
    )
    parser.add_argument("--visitors", type=int, default=8, help="concurrent GET visitors")
    parser.add_argument(
        "--wal-bound-mb", type=float, default=64.0, help="the WAL size the outbox must stay under"
    )
    parser.add_argument("--log", type=Path, default=None, help="server log file")
    args = parser.parse_args(argv)

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cg-soak-") as tmp:
        data_dir = Path(as_make_run(Path(tmp) / "data"))
        env = gateway_env({
            # The soak's visitors come through a proxy on loopback, their addresses in
            # X-Forwarded-For, and are placed by the geo database as_make_run put there.
            "GATEWAY_TRUSTED_PROXIES": "127.0.0.1",
            "GATEWAY_DATA_DIR": str(data_dir),
            # One worker (what `auto` gives on one CPU): the soak watches the serving
            # process's RSS, descriptors and outbox WAL, which a supervisor does not hold.
            "GATEWAY_WORKERS": "1",
        })  # fmt: skip
        log_path = args.log or Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                gateway_command(port),  # `consent-gateway serve` as README runs it
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                _wait_ready(port, proc)
                idle_rss = _rss_mb(proc.pid)
                result = asyncio.run(
                    load(port, proc.pid, data_dir, args.seconds, args.warmup, args.visitors)
                )
                result["rss_idle_mb"] = round(idle_rss, 1)
                proc.send_signal(signal.SIGTERM)
                # uvicorn re-raises the signal after a graceful shutdown: -15 is a clean exit.
                result["exit_code"] = proc.wait(timeout=60)
            finally:
                stop(proc)
        text = log_path.read_text(errors="replace")
        result["log_lines"] = len(text.splitlines())
        result["log_tracebacks"] = text.count("Traceback")
        result["log_receipts"] = text.count("receipt=v1.")
        result["shutdown_complete"] = "Application shutdown complete" in text
    result["wal_bound_mb"] = args.wal_bound_mb
    verdict = {
        "rss_within_20pct": abs(result["rss_growth_pct"]) <= 20,
        "wal_under_bound": result["wal_max_mb"] <= args.wal_bound_mb,
        "no_5xx": result["five_xx"] == 0,
        "visitors_served": result["status"].get("visitor_get", {}).get(200, 0) > 0
        and result["status"].get("visitor_post", {}).get(201, 0) > 0,
        "clean_exit": result["shutdown_complete"] and result["exit_code"] in (0, -15),
    }
    result["verdict"] = verdict
    samples = result.pop("samples")
    print(json.dumps(result, indent=2))
    print(
        "samples (t s, rss MB, fds, wal MB):",
        " ".join(f"{s['t']:.0f}/{s['rss_mb']}/{s['fds']}/{s['wal_mb']}" for s in samples),
    )
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
