"""Test helpers: paths, settings on temporary data dirs, the shipped translations.

Fixtures live in conftest.py and use these; tests import helpers from here, never from
conftest.py (pytest owns that module's import).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from babel.messages.pofile import read_po

from gateway.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# MaxMind's MIT-licensed test databases, vendored with their licence (tests/data/geoip/).
GEOIP_DIR = ROOT / "tests" / "data" / "geoip"
CITY_DB = GEOIP_DIR / "GeoIP2-City-Test.mmdb"
IN_CI = os.environ.get("CI", "").lower() == "true"
OPS_TOKEN = "ops-token-for-tests-0123456789"
# What an operator's monitoring sends to see /readyz's details and /metrics.
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}


def shipped(locale: str, msgid: str) -> str:
    """The committed translation, so that translators may reword without breaking tests."""
    with (ROOT / "locales" / locale / "LC_MESSAGES" / "demo.po").open("rb") as fp:
        text = read_po(fp, locale=locale)[msgid].string
    assert isinstance(text, str)
    return text


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
