"""site.toml validation: every mistake names the file, the key and gives a hint."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.core.errors import ConfigError
from gateway.sites.sitefile import parse_site, read_site

ROOT = Path(__file__).resolve().parent.parent
DEMO = tomllib.loads((ROOT / "banners" / "demo" / "site.toml").read_text())


def test_demo_site_parses() -> None:
    site = read_site(ROOT / "banners" / "demo")
    assert site.id == "demo" and site.default_locale == "en"
    assert [p.id for p in site.purposes] == [
        "necessary",
        "analytics",
        "marketing",
        "personalization",
    ]
    assert site.purpose("necessary").essential  # type: ignore[union-attr]
    assert [p.id for p in site.optional_purposes] == ["analytics", "marketing", "personalization"]


def _with(**changes: Any) -> dict[str, Any]:
    data = {**DEMO, **changes}
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize(
    ("data", "where", "needle"),
    [
        (_with(colour="red"), "colour", "unknown key"),
        (_with(default_locale=None), "default_locale", "missing"),
        (_with(default_locale="english"), "default_locale", "invalid locale"),
        (_with(locales=["en", "de-DE"]), "locales", "invalid entry"),
        (_with(allowed_origins=["javascript:alert(1)"]), "allowed_origins", "invalid entry"),
        (
            _with(purposes=[{"id": "x", "name": "X", "description": "d"}]),
            "purposes",
            "no essential purpose",
        ),
        (_with(purposes=[*DEMO["purposes"], DEMO["purposes"][1]]), "purposes", "duplicate"),
        (
            _with(purposes=[{**DEMO["purposes"][0], "consent_mode": ["ads"]}]),
            "purposes[0].consent_mode",
            "Consent Mode",
        ),
        (
            _with(purposes=[{**DEMO["purposes"][0], "separate": "sometimes"}]),
            "purposes[0].separate",
            "separate-consent",
        ),
        (
            _with(purposes=[{**DEMO["purposes"][0], "essential": "yes"}]),
            "purposes[0].essential",
            "expected bool",
        ),
        (_with(cookie={"max_age_days": 395}), "cookie.max_age_days", "393"),  # 13 months (W13)
        (_with(theme={"color": "red"}), "theme.color", "--cg-"),
        (_with(theme={"--cg-accent": "red;}body{display:none"}), "theme.--cg-accent", "plain"),
    ],
)
def test_errors_name_file_and_key(data: dict[str, Any], where: str, needle: str) -> None:
    path = Path("banners/demo/site.toml")
    with pytest.raises(ConfigError) as info:
        parse_site("demo", path, data)
    assert f"{path}: {where}" in str(info.value)
    assert needle in str(info.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "site.toml").write_text("name = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_site(tmp_path / "broken")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"missing site\.toml"):
        read_site(tmp_path / "empty")


def test_bad_site_folder_name() -> None:
    with pytest.raises(ConfigError, match="invalid site id"):
        parse_site("Bad Site", Path("banners/Bad Site/site.toml"), DEMO)
