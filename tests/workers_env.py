"""`consent-gateway serve --workers N` as the tests run it: real processes on a free port, a
load of consents from many connections, and reading what reached the store."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import asyncpg
import httpx

from tests.helpers import CITY_DB, OPS, OPS_TOKEN, ROOT
from tests.pg import ORIGIN, secret_of

CLI = Path(sys.executable).parent / "consent-gateway"
DEMO_CHOICES = {"analytics": False, "marketing": False, "personalization": False}


class Gateway:
    """One `consent-gateway serve` (a supervisor and its workers, or a single process)."""

    def __init__(
        self, data_dir: Path, port: int, workers: int, log_dir: Path | None = None, **env: str
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        environ.update({
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_DATA_DIR": str(data_dir),
            "GATEWAY_BANNERS_DIR": str(ROOT / "banners"),
            "GATEWAY_LOCALES_DIR": str(ROOT / "locales"),
            "GATEWAY_GEOIP_DB": str(CITY_DB),
            "GATEWAY_RELOAD": "false",
            "GATEWAY_NODE_ID": "workers-node",
            "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_OPS_TOKEN": OPS_TOKEN,
            "GATEWAY_CLIENT_WRITES_PER_MINUTE": "0",
            "GATEWAY_SUBJECT_WRITES_PER_MINUTE": "0",
            "GATEWAY_FORWARD_MAX_BACKOFF": "0.5",
            "GATEWAY_TASK_MAX_BACKOFF": "1",
            **env,
        })  # fmt: skip
        log_dir = log_dir or data_dir.parent
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"serve-{port}-{time.monotonic_ns()}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.env = environ
        self.process = subprocess.Popen(
            [str(CLI), "serve", "--workers", str(workers)],
            cwd=ROOT, env=environ, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def workers(self) -> list[int]:
        """The pids of the supervisor's children (its workers)."""
        pid = self.process.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def wait_ready(self, within: float = 60.0, workers: int = 0) -> None:
        deadline = time.monotonic() + within
        while True:
            assert self.process.poll() is None, self.log()
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200 and (
                    len(self.workers()) >= workers
                ):
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"not ready in time\n{self.log()}"
            time.sleep(0.1)

    def metrics(self) -> str:
        return httpx.get(f"{self.base}/metrics", headers=OPS, timeout=5).text

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code (the test fails if it does not exit in time)."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"serve did not exit on SIGTERM\n{self.log()}") from None
        finally:
            self._log.close()
        return code

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]


async def banner_version(base: str) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        version: str = (await client.get(f"{base}/v1/sites/demo/config")).json()["banner_version"]
        return version


class Load:
    """Writers posting consents, each on a new connection (so every worker gets some); the
    record ids answered 201 and the other answers, by status."""

    def __init__(self, base: str, version: str) -> None:
        self.base = base
        self.version = version
        self.acked: dict[str, str] = {}
        self.receipts: list[str] = []
        self.statuses: dict[int | str, int] = {}
        self.running = True

    async def writer(self, name: str) -> None:
        n = 0
        fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
        async with httpx.AsyncClient(timeout=10, limits=fresh) as c:
            while self.running:
                n += 1
                body = {
                    "subject_secret": secret_of(f"{name}-{n}"),
                    "banner_version": self.version,
                    "action": "reject_all",
                    "choices": DEMO_CHOICES,
                }
                try:
                    r = await c.post(
                        f"{self.base}/v1/sites/demo/consents", json=body,
                        headers={"Origin": ORIGIN},
                    )  # fmt: skip
                except httpx.TransportError as exc:
                    key: int | str = type(exc).__name__
                    self.statuses[key] = self.statuses.get(key, 0) + 1
                    await asyncio.sleep(0.01)
                    continue
                self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                if r.status_code == 201:
                    self.acked[r.json()["record_id"]] = r.json()["subject_id"]
                    self.receipts.append(r.json()["receipt"])

    def ok(self) -> int:
        return self.statuses.get(201, 0)


def sqlite_records(data_dir: Path) -> list[str]:
    """Every record id the embedded store holds (with repeats, if any)."""
    conn = sqlite3.connect(data_dir / "store.sqlite3")
    try:
        return [row[0] for row in conn.execute("SELECT record_id FROM consent_records")]
    finally:
        conn.close()


async def pg_records(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT record_id::text FROM consent_records")
    finally:
        await conn.close()
    return [row[0] for row in rows]


def outbox_files(data_dir: Path) -> Iterator[Path]:
    yield from sorted(data_dir.glob("**/outbox.sqlite3"))
