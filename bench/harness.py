"""Start servers pinned to one core, load them with wrk from the other, parse the figures."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# One free_port and one stop for everything the repo starts (tests and benchmarks alike).
from tests.procs import free_port as free_port
from tests.procs import stop as stop

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass(frozen=True)
class Result:
    name: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float = 0.0  # the server's process CPU per request, when its pid was given

    def row(self, baseline: Result | None = None) -> str:
        ratio = f"{self.rps / baseline.rps:5.2f}x" if baseline else "  —  "
        p99 = f"{self.p99_ms / baseline.p99_ms:5.2f}x" if baseline else "  —  "
        cpu = f"  cpu {self.cpu_us:5.1f} us/req" if self.cpu_us else ""
        return (
            f"{self.name:<22} c={self.connections:<3} {self.rps:>9.0f} rps  "
            f"p50 {self.p50_ms:6.2f} ms  p99 {self.p99_ms:6.2f} ms  "
            f"throughput {ratio}  p99 {p99}  errors {self.errors}{cpu}"
        )


def _wait(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not start")


# Base URL → pid of each server started by running(), for CPU figures.
PIDS: dict[str, int] = {}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The command README tells users to run: the console script of the same environment.
CONSENT_GATEWAY = str(Path(PYTHON).parent / "consent-gateway")


# How the bare endpoints run under uvicorn (one worker, uvloop, httptools, no log), as
# uvicorn.Config's keywords: uvicorn_command spells them as its command line's flags.
BARE_UVICORN: dict[str, str | bool] = {
    "loop": "uvloop", "http": "httptools", "access_log": False, "log_level": "warning",
}  # fmt: skip


def uvicorn_command(app: str, port: int) -> list[str]:
    """`uvicorn app` as the bare endpoints run (BARE_UVICORN); the gateway itself is never
    started this way (gateway_command)."""
    flags: list[str] = []
    for name, value in BARE_UVICORN.items():
        flag = name.replace("_", "-")
        flags += (
            [f"--{flag}", value]
            if isinstance(value, str)
            else [f"--{'' if value else 'no-'}{flag}"]
        )
    return [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), *flags]


def gateway_command(port: int) -> list[str]:
    """`consent-gateway serve` exactly as shipped; settings come from GATEWAY_* variables."""
    return [CONSENT_GATEWAY, "serve", "--host", "127.0.0.1", "--port", str(port)]


# The settings a bench may give the gateway, each for a reason of the bench's own; every other
# setting keeps the default users get. gateway_env refuses any other name.
_WRK_ONE_CLIENT = (
    "wrk is one client address: its bucket is checked on every POST but set so high that it "
    "never refuses; each POST's own subject keeps its default bucket"
)
_CDN_EDGE = "wrk plays a Cloudflare edge on loopback, so CF-IPCountry decides the region"
# Those two as bench.serve and bench.protocol give them.
CDN_EDGE = {"GATEWAY_TRUSTED_PROXIES": "127.0.0.1", "GATEWAY_GEO_HEADERS": "cloudflare"}
BENCH_SETTINGS: dict[str, str] = {
    "GATEWAY_DATA_DIR": "a fresh data dir as `make run` leaves it (as_make_run), not the user's",
    "GATEWAY_WORKERS": "1 where a figure is one worker's, as the bare endpoint has (`auto` is "
    "one per CPU); bench.workers compares counts",
    "GATEWAY_OPS_TOKEN": "to read /readyz's details and /metrics (outbox depth, commits)",
    "GATEWAY_CLIENT_WRITES_PER_MINUTE": _WRK_ONE_CLIENT,
    "GATEWAY_CLIENT_WRITE_BURST": _WRK_ONE_CLIENT,
    "GATEWAY_SUBJECT_WRITES_PER_MINUTE": "bench.record --limits off (its default keeps it)",
    "GATEWAY_DURABILITY": "bench.record --durability (its default is the shipped `power`)",
    "GATEWAY_ACCESS_LOG": "bench.serve sets the log modes it compares with the default",
    "GATEWAY_TRUSTED_PROXIES": _CDN_EDGE,
    "GATEWAY_GEO_HEADERS": _CDN_EDGE,
    "GATEWAY_STORE_URL": "the benches of the PostgreSQL store",
    "GATEWAY_IDENTITY_KEY": "bench.contactability's subjects are keyed with it",
    "GATEWAY_BANNERS_DIR": "bench.iab's scratch copy of the demo beside a TCF site",
    "GATEWAY_LOCALES_DIR": "bench.iab's scratch copy of the demo beside a TCF site",
}


def gateway_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The environment `consent-gateway serve` runs in under a bench: this process's, less its
    GATEWAY_* variables (a developer's shell would configure the measured server), plus
    ``settings``, each of which BENCH_SETTINGS must give a reason for."""
    unlisted = sorted(set(settings) - set(BENCH_SETTINGS))
    if unlisted:
        raise ValueError(f"not a setting benches change (BENCH_SETTINGS): {', '.join(unlisted)}")
    kept = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {**kept, **settings}


def as_flags(settings: Mapping[str, str]) -> list[str]:
    """``settings`` as `serve`'s command-line flags (GATEWAY_GEO_HEADERS: --geo-headers)."""
    flags: list[str] = []
    for name, value in settings.items():
        flags += ["--" + name.removeprefix("GATEWAY_").lower().replace("_", "-"), value]
    return flags


@contextlib.contextmanager
def running(
    command: Callable[[int], list[str]],
    *,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/",
    cpu: str = "0",
) -> Iterator[str]:
    """Run ``command(port)`` pinned to ``cpu``, in ``env`` (default: this process's); yield
    its base URL once it answers."""
    port = free_port()
    cmd = command(port)
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", cpu, *cmd]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ if env is None else env))
    base = f"http://127.0.0.1:{port}"
    PIDS[base] = proc.pid
    try:
        _wait(base + ready_path)
        yield base
    finally:
        PIDS.pop(base, None)
        stop(proc)


def server(
    app: str, *, env: Mapping[str, str] | None = None, ready_path: str = "/", cpu: str = "0"
) -> contextlib.AbstractContextManager[str]:
    """A bare ASGI app under uvicorn (see uvicorn_command), in this process's environment
    plus ``env``."""
    return running(lambda port: uvicorn_command(app, port), env={**os.environ, **(env or {})},
                   ready_path=ready_path, cpu=cpu)  # fmt: skip


def gateway(
    env: Mapping[str, str] | None = None, *, ready_path: str = "/healthz", cpu: str = "0"
) -> contextlib.AbstractContextManager[str]:
    """The gateway started as README tells users: `consent-gateway serve`, with ``env``'s
    settings (gateway_env) and every other at its default."""
    return running(gateway_command, env=gateway_env(env or {}), ready_path=ready_path, cpu=cpu)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    name: str,
    url: str,
    connections: int,
    seconds: int = 8,
    script: str | None = None,
    headers: Mapping[str, str] | None = None,
    cpu: str = "1",
    pid: int | None = None,
) -> Result:
    """One wrk run with --latency; a short warm-up run first. With the server's ``pid``, its
    CPU per request too (steadier than throughput when other work shares the machine)."""
    base = ["wrk", "-t", "1", "-c", str(connections), "--latency"]
    for k, v in (headers or {}).items():
        base += ["-H", f"{k}: {v}"]
    if script:
        base += ["-s", script]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        base = ["taskset", "-c", cpu, *base]
    subprocess.run([*base, "-d", "1", url], check=True, capture_output=True)
    before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        [*base, "-d", str(seconds), url], check=True, capture_output=True, text=True
    ).stdout
    used = cpu_seconds(pid) - before if pid else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    total = re.search(r"(\d+) requests in", out)
    cpu_us = used / int(total.group(1)) * 1e6 if pid and total else 0.0
    return Result(name, connections, rps, p50, p99, errors, cpu_us)


def temp_data_dir() -> str:
    """A fresh data dir, as `make run` leaves the user's before it serves (as_make_run)."""
    return as_make_run(tempfile.mkdtemp(prefix="cg-bench-"))


# Where the geo database a bench copies comes from: built once per machine by the command
# `make run` runs (~5 s), then copied into each fresh data dir.
_GEO_BUILT = Path(tempfile.gettempdir()) / "cg-bench-geo" / "country.mmdb"


def as_make_run(data_dir: str | Path) -> str:
    """``data_dir`` as `make run` leaves it before `consent-gateway serve`: holding the
    embedded geo database that `consent-gateway geo build --if-missing` writes there, which
    the gateway then looks visitors' addresses up in. Where the command cannot build one (no
    tor-geoipdb), there is none, as for the user. Returns ``data_dir``."""
    target = Path(data_dir) / "geo" / "country.mmdb"
    if not target.exists():
        if not _GEO_BUILT.exists():
            _GEO_BUILT.parent.mkdir(parents=True, exist_ok=True)
            part = _GEO_BUILT.with_name(f"{os.getpid()}.part.mmdb")
            built = subprocess.run(
                [CONSENT_GATEWAY, "geo", "build", "--if-missing", "--output", str(part)],
                cwd=ROOT, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if built.returncode != 0 or not part.exists():
                print(f"bench: no geo database, as `make run` says then: {built.stderr.strip()}")
                return str(data_dir)
            os.replace(part, _GEO_BUILT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_GEO_BUILT, target)
    return str(data_dir)
