"""Shared fixtures: settings on temporary data dirs and an app driven in-process."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SHARED_GEOIP = ROOT.parent / "shared" / "data" / "geoip"
CITY_DB = SHARED_GEOIP / "GeoIP2-City-Test.mmdb"
IN_CI = os.environ.get("CI", "").lower() == "true"


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
    )
    return base.replace(**changes)


def editable_settings(tmp_path: Path, **changes: object) -> Settings:
    """Settings on a copy of the shipped demo site and catalogs, which a test may edit."""
    shutil.copytree(ROOT / "banners" / "demo", tmp_path / "banners" / "demo")
    shutil.copytree(ROOT / "locales", tmp_path / "locales")
    return make_settings(tmp_path, banners_dir=tmp_path / "banners",
                         locales_dir=tmp_path / "locales", **changes)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    # The peer is the loopback proxy the default settings trust, so CDN headers count.
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000",
                    client=("127.0.0.1", 50000)) as c:
        yield c
