"""Shared helpers for the recording tests: a throw-away PostgreSQL database, free ports,
the demo site as the serving side would hand it over, and a small app with the recording
routes on stand-ins of the lead's ``Gateway`` (same attributes, built from real values)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest
from starlette.applications import Starlette

from gateway.core.model import ConsentRecord, Site
from gateway.core.settings import Settings
from gateway.recording.fields import Uuid7Clock, rfc3339_utc
from gateway.sites.sitefile import read_site
from tests.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
ORIGIN = "http://127.0.0.1:8000"


def dsn_for(name: str, port: int = 5432) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{name}"


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A uniquely named database, dropped (with its connections) afterwards."""
    name = f"cg_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    async with scratch_database() as name:
        yield dsn_for(name)


@dataclass(frozen=True)
class SiteBundle:
    """The fields of the lead's catalog.SiteBundle the recording path reads."""

    site: Site
    banner_version: str
    consent_revision: str
    known_versions: frozenset[str]


@functools.cache
def demo_bundle() -> SiteBundle:
    """The real demo site, with a fixed version (the translations are not needed here)."""
    site = read_site(ROOT / "banners" / "demo")
    return SiteBundle(site, "v-test-1", "rev-test-1", frozenset({"v-test-1", "v-test-0"}))


def all_choices(value: bool) -> dict[str, bool]:
    return {p.id: value for p in demo_bundle().site.optional_purposes}


class _Versioned(Protocol):
    """Either bundle: this module's stand-in or the catalog's own SiteBundle."""

    @property
    def site(self) -> Site: ...

    @property
    def banner_version(self) -> str: ...


def secret_of(subject: str) -> str:
    """A stable subject secret for a test's named subject (the shape the snippet makes)."""
    return hashlib.sha256(subject.encode()).hexdigest()[:32]


def consent_body(
    bundle: _Versioned, subject: str, action: str = "accept_all", **extra: Any
) -> dict[str, Any]:
    value = action == "accept_all"
    choices = {p.id: value for p in bundle.site.optional_purposes}
    return {
        "subject_secret": secret_of(subject),
        "banner_version": bundle.banner_version,
        "action": action,
        "choices": choices,
        **extra,
    }


def recording_app(settings: Settings) -> Starlette:
    """The whole gateway on the repository's sites, recording into ``settings.data_dir``."""
    from gateway.app import create_app

    root = Path(__file__).resolve().parent.parent
    return create_app(
        settings.replace(banners_dir=root / "banners", locales_dir=root / "locales", reload=False)
    )


def recording_app_from_env() -> Starlette:
    """uvicorn --factory entry for the crash and outage tests (settings from GATEWAY_*)."""
    from gateway.core.settings import load_settings

    return recording_app(load_settings())


class TcpProxy:
    """A loopback TCP proxy the outage test stops and restarts to cut PostgreSQL off."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)


_CLOCK_NS = [1_767_225_600_000_000_000]


def make_record(
    subject: str = "subject-1",
    *,
    site: str = "demo",
    key: str | None = None,
    recorded_at: str | None = None,
    record_id: str | None = None,
    analytics: bool = True,
    **changes: Any,
) -> ConsentRecord:
    """A plausible stored record with a fresh time-ordered id."""
    _CLOCK_NS[0] += 1_000
    rid, ns = _TEST_CLOCK.next(_CLOCK_NS[0])
    data = dict(
        record_id=record_id or rid,
        recorded_at=recorded_at or rfc3339_utc(ns),
        site=site,
        subject_id=subject,
        banner_version="v-test-1",
        consent_revision="rev-test-1",
        action="custom",
        choices={"necessary": True, "analytics": analytics, "marketing": False},
        channel="web",
        language="en",
        rule_id="eu-gdpr",
        region_country="DE",
        region_subdivision=None,
        region_source="header",
        gpc=False,
        ip_truncated="203.0.113.0/24",
        user_agent="pytest",
        origin=ORIGIN,
        page_url="https://shop.example/",
        node_id="test-node",
        idempotency_key=key,
    )
    data.update(changes)
    return ConsentRecord(**data)  # type: ignore[arg-type]


_TEST_CLOCK = Uuid7Clock()


async def served_version(client: Any, base: str, within: float = 30) -> str:
    """Wait for a gateway at ``base`` to serve the demo config; its banner version.
    ``client`` is an ``httpx.AsyncClient``."""
    import httpx

    deadline = time.monotonic() + within
    while True:
        try:
            r = await client.get(f"{base}/v1/sites/demo/config")
            if r.status_code == 200:
                version: str = r.json()["banner_version"]
                return version
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the gateway at {base} did not start"
        await asyncio.sleep(0.1)


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll until the predicate holds, or fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
