"""Catalog loading and versions: content hash vs consent revision, live swap of valid edits."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.sites.catalog import LiveCatalog, load_site, scan
from tests.helpers import shipped_rules

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    banners = tmp_path / "banners"
    locales = tmp_path / "locales"
    shutil.copytree(ROOT / "banners", banners)
    shutil.copytree(ROOT / "locales", locales)
    return banners, locales


def test_every_shipped_site_loads() -> None:
    bundles, errors = scan(ROOT / "banners", ROOT / "locales", shipped_rules())
    assert errors == []
    assert "demo" in bundles
    demo = bundles["demo"]
    assert demo.banner_version in demo.known_versions
    assert len(demo.banner_version) == 12 and len(demo.consent_revision) == 8


def test_wording_change_bumps_version_not_revision(tree: tuple[Path, Path]) -> None:
    banners, locales = tree
    before = load_site(banners / "demo", locales, shipped_rules())
    toml = banners / "demo" / "site.toml"
    toml.write_text(toml.read_text().replace('name = "Analytics"', 'name = "Audience measurement"'))
    after = load_site(banners / "demo", locales, shipped_rules())
    assert after.banner_version != before.banner_version
    assert after.consent_revision == before.consent_revision


def test_new_purpose_bumps_both(tree: tuple[Path, Path]) -> None:
    banners, locales = tree
    before = load_site(banners / "demo", locales, shipped_rules())
    toml = banners / "demo" / "site.toml"
    toml.write_text(
        toml.read_text() + '\n[[purposes]]\nid = "video"\nname = "Video"\n'
        'description = "Embedded videos."\n'
    )
    after = load_site(banners / "demo", locales, shipped_rules())
    assert after.banner_version != before.banner_version
    assert after.consent_revision != before.consent_revision


def test_an_exemption_claim_bumps_the_revision(tree: tuple[Path, Path]) -> None:
    """PECR Sch. A1: what runs without consent changes what the visitor must be told."""
    banners, locales = tree
    before = load_site(banners / "demo", locales, shipped_rules())
    toml = banners / "demo" / "site.toml"
    toml.write_text(toml.read_text().replace("provider_is_processor = true", ""))
    after = load_site(banners / "demo", locales, shipped_rules())
    assert after.consent_revision != before.consent_revision


def test_reload_keeps_last_good_state(tree: tuple[Path, Path]) -> None:
    banners, locales = tree
    catalog = LiveCatalog(banners, locales, shipped_rules())
    catalog.load()
    good = catalog.get("demo")
    assert good is not None
    (banners / "demo" / "site.toml").write_text("purposes = 3\n")
    assert catalog.reload() is False
    assert catalog.get("demo") is good
    assert catalog.last_error is not None and "site.toml" in catalog.last_error
    shutil.copy(ROOT / "banners" / "demo" / "site.toml", banners / "demo" / "site.toml")
    assert catalog.reload() is True and catalog.last_error is None


def test_previous_versions_stay_known_after_reload(tree: tuple[Path, Path]) -> None:
    banners, locales = tree
    catalog = LiveCatalog(banners, locales, shipped_rules())
    catalog.load()
    first = catalog.get("demo")
    assert first is not None
    toml = banners / "demo" / "site.toml"
    toml.write_text(toml.read_text().replace('"Marketing"', '"Advertising"'))
    assert catalog.reload()
    second = catalog.get("demo")
    assert second is not None and second.banner_version != first.banner_version
    assert first.banner_version in second.known_versions


def test_reload_refuses_a_template_that_does_not_render(tree: tuple[Path, Path]) -> None:
    from gateway.serving.validation import validate_bundle

    banners, locales = tree
    catalog = LiveCatalog(banners, locales, shipped_rules(), validate=validate_bundle)
    catalog.load()
    good = catalog.get("demo")
    (banners / "demo" / "banner.html").write_text(
        '{% extends "default:banner.html" %}{% block title %}{{ titel }}{% endblock %}'
    )
    assert catalog.reload() is False
    assert catalog.get("demo") is good
    assert catalog.last_error is not None and "titel" in catalog.last_error
