"""The central stores the audit tamper tests run on, behind one small interface: settings for
`audit verify`, the raw SQL a forger with write access would run, and the CLI run on them.

``backend`` is a fixture over tests/pg.py's STORES: the embedded SQLite store in a scratch data
dir, or a scratch PostgreSQL database (dropped afterwards)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.core.settings import Settings
from gateway.sinks.sqlite import FILE_NAME
from tests.helpers import make_settings
from tests.pg import STORES, dsn_for, scratch_database

AUDIT_KEY = "k" * 32


@dataclass
class Backend:
    name: str  # "sqlite" or "postgres"
    settings: Settings

    async def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run ``query`` (``?`` placeholders) on the store, as a forger would: no app code."""
        if self.name == "sqlite":
            return await asyncio.to_thread(self._sqlite, query, args)
        counter = iter(range(1, 100))
        pg_query = re.sub(r"\?", lambda _: f"${next(counter)}", query)
        conn = await asyncpg.connect(self.settings.store_url)
        try:
            return [tuple(r) for r in await conn.fetch(pg_query, *args)]
        finally:
            await conn.close()

    def _sqlite(self, query: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.settings.data_dir / FILE_NAME, isolation_level=None)
        try:
            return conn.execute(query, args).fetchall()
        finally:
            conn.close()

    @property
    def path(self) -> Path:
        return self.settings.data_dir / FILE_NAME

    async def cli_verify(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """`consent-gateway audit verify` on this store, in a process of its own."""
        where = (
            ["--data-dir", str(self.settings.data_dir)]
            if self.name == "sqlite"
            else ["--store-url", self.settings.store_url]
        )
        command = [sys.executable, "-m", "gateway.cli.main", "audit", "verify", *where, *extra]
        return await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=120, check=False
        )

    async def assert_cli_verifies(self, kind: str, links: int) -> None:
        """`audit verify` exits 0 and reports ``links`` links of ``kind`` checked, ok."""
        ran = await self.cli_verify()
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert f"{kind}: {links} link(s) checked, ok" in ran.stdout


@pytest.fixture(params=STORES, name="backend")
async def backend_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        settings = make_settings(tmp_path, audit_key=AUDIT_KEY, store_url="")
        yield Backend("sqlite", settings)
        return
    async with scratch_database() as name:
        settings = make_settings(tmp_path, audit_key=AUDIT_KEY, store_url=dsn_for(name))
        yield Backend("postgres", settings)
