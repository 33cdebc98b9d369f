"""Test helpers: paths, settings on temporary data dirs, the shipped translations.

Fixtures live in conftest.py and use these; tests import helpers from here, never from
conftest.py (pytest owns that module's import).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from babel.messages.pofile import read_po

from gateway.core.jurisdictions import RuleTable, load_rules
from gateway.core.settings import Settings
from gateway.recording.outbox.group_commit import Outbox

ROOT = Path(__file__).resolve().parent.parent
# MaxMind's MIT-licensed test databases, vendored with their licence (tests/data/geoip/).
GEOIP_DIR = ROOT / "tests" / "data" / "geoip"
CITY_DB = GEOIP_DIR / "GeoIP2-City-Test.mmdb"
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> NoReturn:
    """A test's real component is missing: skip on a developer's machine, fail under CI=true,
    where nothing that needs PostgreSQL, NATS, node or a tmpfs may be skipped."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


OPS_TOKEN = "ops-token-for-tests-0123456789"
# What an operator's monitoring sends to see /readyz's details and /metrics.
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}


def shipped(locale: str, msgid: str) -> str:
    """The committed translation, so that translators may reword without breaking tests."""
    with (ROOT / "locales" / locale / "LC_MESSAGES" / "demo.po").open("rb") as fp:
        text = read_po(fp, locale=locale)[msgid].string
    assert isinstance(text, str)
    return text


@functools.cache
def shipped_rules() -> RuleTable:
    """The shipped rule table, read once for the tests that use it (it is immutable)."""
    return load_rules()


def make_settings(tmp_path: Path, **changes: object) -> Settings:
    base = Settings(
        banners_dir=ROOT / "banners",
        locales_dir=ROOT / "locales",
        data_dir=tmp_path / "data",
        reload=False,
        node_id="test-node",
        durability="process",
        # The tests play a deployment behind a CDN whose edge reaches the gateway over
        # loopback: that peer is trusted, for these CDN families (the defaults trust nothing).
        trusted_proxies=("127.0.0.1", "::1"),
        geo_headers=("cloudflare", "cloudfront", "vercel"),
        ops_token=OPS_TOKEN,
    )
    return base.replace(**changes)


def editable_settings(tmp_path: Path, **changes: object) -> Settings:
    """Settings on a copy of the shipped demo site and catalogs, which a test may edit."""
    shutil.copytree(ROOT / "banners" / "demo", tmp_path / "banners" / "demo")
    shutil.copytree(ROOT / "locales", tmp_path / "locales")
    return make_settings(
        tmp_path,
        banners_dir=tmp_path / "banners",
        locales_dir=tmp_path / "locales",
        **changes,
    )


async def opened(tmp_path: Path, **kwargs: object) -> Outbox:
    """An open outbox in ``tmp_path`` (keyword arguments go to ``Outbox``)."""
    outbox = Outbox(tmp_path / "outbox.sqlite3", **kwargs)  # type: ignore[arg-type]
    await outbox.open()
    return outbox


@contextlib.contextmanager
def small_disk(path: Path, size: str = "16m") -> Iterator[Path]:
    """A real file system of ``size`` (tmpfs) mounted at ``path``, for running out of space.

    Mounting needs root (CAP_SYS_ADMIN); elsewhere the test is skipped, saying why."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        unavailable(f"cannot mount a small tmpfs to fill: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(directory: Path) -> Path:
    """Write a ballast file until the file system is full; remove it to free the space."""
    ballast = directory / "ballast"
    with ballast.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        try:  # the last partial page
            while True:
                handle.write(b"\0" * 512)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return ballast
