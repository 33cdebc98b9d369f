"""Versions: what bumps banner_version vs consent_revision, publishing texts, and the listing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from babel.messages.pofile import read_po, write_po
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.cli.main import main
from gateway.core.settings import Settings
from gateway.sinks.sqlite import FILE_NAME, SqliteStore
from gateway.sites.catalog import load_site
from gateway.sites.versions import format_versions, list_versions
from tests.helpers import editable_settings, shipped_rules


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return editable_settings(tmp_path, admin_token="t" * 24)


def _toml(s: Settings, old: str, new: str) -> None:
    path = s.banners_dir / "demo" / "site.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def _retranslate(s: Settings) -> None:
    path = s.locales_dir / "de" / "LC_MESSAGES" / "demo.po"
    with path.open("rb") as fp:
        catalog = read_po(fp, locale="de")
    catalog["Accept all"].string = "Alles annehmen"
    with path.open("wb") as fp:
        write_po(fp, catalog)


NEW_PURPOSE = '\n[[purposes]]\nid = "video"\nname = "Video"\ndescription = "Embedded videos."\n'
Edit = Callable[[Settings], object]
CASES: list[tuple[str, Edit, bool, bool]] = [
    # (what changed, edit, banner_version changes, consent_revision changes)
    ("nothing", lambda s: None, False, False),
    (
        "purpose wording",
        lambda s: _toml(s, 'name = "Analytics"', 'name = "Audience stats"'),
        True,
        False,
    ),
    ("a translation", _retranslate, True, False),
    (
        "a text override",
        lambda s: _toml(s, "[cookie]", '[texts]\ntitle = "Cookies?"\n\n[cookie]'),
        True,
        False,
    ),
    (
        "a template block",
        lambda s: (s.banners_dir / "demo" / "banner.html").write_text(
            '{% extends "default:banner.html" %}{% block footer %}<hr>{% endblock %}'
        ),
        True,
        False,
    ),
    (
        "the theme",
        lambda s: _toml(s, "[cookie]", '[theme]\n"--cg-accent" = "#b00020"\n\n[cookie]'),
        True,
        False,
    ),
    (
        "a new purpose",
        lambda s: _toml(s, "[cookie]", NEW_PURPOSE.lstrip() + "\n[cookie]"),
        True,
        True,
    ),
    (
        "a purpose's recipients",
        lambda s: _toml(s, 'recipients = ["Google Ads", "Meta"]', 'recipients = ["Google Ads"]'),
        True,
        True,
    ),
    (
        "the rule of a region",
        lambda s: _toml(s, "[cookie]", '[rules."US-CA"]\nrule = "gdpr"\n\n[cookie]'),
        True,
        True,
    ),
]


@pytest.mark.parametrize(
    ("name", "edit", "version_changes", "revision_changes"), CASES, ids=[c[0] for c in CASES]
)
def test_what_bumps_which_version(
    settings: Settings, name: str, edit: Edit, version_changes: bool, revision_changes: bool
) -> None:
    before = load_site(settings.banners_dir / "demo", settings.locales_dir, shipped_rules())
    edit(settings)
    after = load_site(settings.banners_dir / "demo", settings.locales_dir, shipped_rules())
    assert (after.banner_version != before.banner_version) is version_changes
    assert (after.consent_revision != before.consent_revision) is revision_changes


def test_format_marks_current_and_consent_changes(settings: Settings) -> None:
    current = load_site(settings.banners_dir / "demo", settings.locales_dir, shipped_rules())
    stored = [
        {
            "banner_version": current.banner_version,
            "consent_revision": "bbbbbbbb",
            "published_at": "2026-11-29T10:00:00Z",
        },
        {
            "banner_version": "0123456789ab",
            "consent_revision": "aaaaaaaa",
            "published_at": "2026-11-28T10:00:00Z",
        },
    ]
    lines = format_versions("demo", stored, current)
    assert lines[0].startswith(f"site demo: current banner_version {current.banner_version}")
    assert lines[2].endswith("(current; consent changed: visitors are asked again)")
    assert lines[3] == "0123456789ab    aaaaaaaa          2026-11-28T10:00:00Z"
    assert format_versions("demo", [], None) == [
        "no published versions yet (the gateway publishes on start and on every reload)"
    ]


def test_starting_the_gateway_publishes_the_exact_texts(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        config = client.get("/v1/sites/demo/config?lang=de&region=DE").json()
    version = config["banner_version"]

    async def stored() -> dict[str, object] | None:
        store = SqliteStore(settings.data_dir / FILE_NAME)
        await store.open()
        try:
            return await store.banner_version("demo", version)
        finally:
            await store.close()

    row = asyncio.run(stored())
    assert row is not None
    assert row["consent_revision"] == config["consent_revision"]
    texts = row["texts"]
    assert isinstance(texts, dict)
    assert texts["de"]["texts"]["opt-in"]["title"] == config["texts"]["title"]
    names = {p["id"]: p["name"] for p in config["purposes"]}
    assert texts["de"]["purposes"]["analytics"]["name"] == names["analytics"]
    assert set(texts) == set(
        load_site(settings.banners_dir / "demo", settings.locales_dir, shipped_rules()).site.locales
    )


def test_cli_lists_published_versions(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "versions",
        "demo",
        "--banners-dir",
        str(settings.banners_dir),
        "--locales-dir",
        str(settings.locales_dir),
        "--data-dir",
        str(settings.data_dir),
    ]
    assert main(argv) == 0
    assert "no published versions yet" in capsys.readouterr().out
    with TestClient(create_app(settings)):
        pass
    first = load_site(settings.banners_dir / "demo", settings.locales_dir, shipped_rules())
    _toml(settings, "[cookie]", NEW_PURPOSE.lstrip() + "\n[cookie]")
    with TestClient(create_app(settings)):
        pass
    second = load_site(settings.banners_dir / "demo", settings.locales_dir, shipped_rules())
    lines = asyncio.run(list_versions(settings, "demo"))
    assert lines[0] == (
        f"site demo: current banner_version {second.banner_version}, "
        f"consent_revision {second.consent_revision}"
    )
    listed = {line.split()[0]: line for line in lines[2:]}
    assert set(listed) == {first.banner_version, second.banner_version}
    assert "(current" in listed[second.banner_version]
    assert first.consent_revision in listed[first.banner_version]
