"""The gettext workflow: extract, init, update, compile round trip over a temporary tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from babel.messages.pofile import read_po, write_po
from babel.support import Translations

from gateway.cli.main import main
from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.sites import i18n_workflow
from gateway.sites.texts import BASE_TEXTS

ROOT = Path(__file__).resolve().parent.parent


def _shipped_count() -> int:
    with (ROOT / "locales" / "demo.pot").open("rb") as fp:
        return len(read_po(fp))


# The committed template (kept current by the last test) plus the two strings of OVERRIDE.
N = _shipped_count() + 2
OVERRIDE = """{% extends "default:banner.html" %}
{% block footer %}{# Translators: a promise under the buttons #}
<p>{{ _("We never sell your data to %(who)s.", who=site.name) }}</p>
<p>{{ ngettext("%(num)d partner", "%(num)d partners", 2) }}</p>{% endblock %}
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The demo site in a temporary project with an empty locales/ folder."""
    shutil.copytree(ROOT / "banners" / "demo", tmp_path / "banners" / "demo")
    (tmp_path / "banners" / "demo" / "banner.html").write_text(OVERRIDE, encoding="utf-8")
    (tmp_path / "locales").mkdir()
    return Settings(
        banners_dir=tmp_path / "banners",
        locales_dir=tmp_path / "locales",
        data_dir=tmp_path / "data",
        reload=False,
    )


def _po(settings: Settings, locale: str) -> Path:
    return settings.locales_dir / locale / "LC_MESSAGES" / "demo.po"


def _edit(path: Path, locale: str, changes: dict[str, tuple[str, bool]]) -> None:
    """Translate msgids as a translator's .po editor would: {msgid: (msgstr, fuzzy)}."""
    with path.open("rb") as fp:
        catalog = read_po(fp, locale=locale)
    for msgid, (string, fuzzy) in changes.items():
        message = catalog[msgid]
        message.string = string
        if fuzzy:
            message.flags.add("fuzzy")
        else:
            message.flags.discard("fuzzy")
    with path.open("wb") as fp:
        write_po(fp, catalog)


def test_extract_collects_every_source_with_locations(settings: Settings) -> None:
    lines = i18n_workflow.run(settings, "extract", "demo", None)
    assert lines == [f"locales/demo.pot: wrote {N} messages"]
    pot = (settings.locales_dir / "demo.pot").read_text(encoding="utf-8")
    with (settings.locales_dir / "demo.pot").open("rb") as fp:
        template = read_po(fp)
    # Built-in texts, with where they are defined and which key shows them.
    accept = template[BASE_TEXTS["accept_all"]]
    assert accept.locations[0][0] == "gateway/sites/texts.py"
    assert accept.locations[0][1] > 1
    assert "text key: accept_all" in accept.auto_comments
    # The site's purposes come from site.toml with their line.
    analytics = template["Analytics"]
    toml_lines = (settings.banners_dir / "demo" / "site.toml").read_text().splitlines()
    where, line = analytics.locations[0]
    assert where == "banners/demo/site.toml"
    assert 'name = "Analytics"' in toml_lines[line - 1]
    assert "purpose analytics: name" in analytics.auto_comments
    # Template strings, a plural, and the translator comment.
    promise = template["We never sell your data to %(who)s."]
    assert promise.locations == [("banners/demo/banner.html", 3)]
    assert promise.auto_comments == ["a promise under the buttons"]
    assert "python-format" in promise.flags
    assert template["%(num)d partner"].id == ("%(num)d partner", "%(num)d partners")
    assert "#: banners/demo/banner.html:3" in pot


def test_extract_twice_leaves_the_file_alone(settings: Settings) -> None:
    i18n_workflow.run(settings, "extract", None, None)
    first = (settings.locales_dir / "demo.pot").read_bytes()
    assert i18n_workflow.run(settings, "extract", None, None) == [
        f"locales/demo.pot: unchanged ({N} messages)"
    ]
    assert (settings.locales_dir / "demo.pot").read_bytes() == first


def test_overridden_builtin_text_is_not_extracted(settings: Settings) -> None:
    toml = settings.banners_dir / "demo" / "site.toml"
    toml.write_text(toml.read_text() + '\n[texts]\ntitle = "Cookies, but fair"\n')
    i18n_workflow.run(settings, "extract", "demo", None)
    with (settings.locales_dir / "demo.pot").open("rb") as fp:
        template = read_po(fp)
    assert template.get(BASE_TEXTS["title"]) is None
    assert template["Cookies, but fair"].auto_comments == ["text key: title"]


def test_round_trip_init_update_compile(settings: Settings) -> None:
    i18n_workflow.run(settings, "extract", "demo", None)
    assert i18n_workflow.run(settings, "init", "demo", "de") == [
        f"locales/de/LC_MESSAGES/demo.po: created with {N} messages to translate"
    ]
    po = _po(settings, "de")
    _edit(
        po,
        "de",
        {
            "Analytics": ("Statistik", False),
            "Accept all": ("Alle akzeptieren", False),
            "Reject all": ("Alle ablehnen", True),  # a translator is unsure
        },
    )
    # A wording change in site.toml: update keeps the old translation as a fuzzy suggestion.
    toml = settings.banners_dir / "demo" / "site.toml"
    toml.write_text(toml.read_text().replace('name = "Analytics"', 'name = "Analytics tools"'))
    i18n_workflow.run(settings, "extract", "demo", None)
    assert i18n_workflow.run(settings, "update", "demo", None) == [
        f"locales/de/LC_MESSAGES/demo.po: {N} messages, 1 new, 2 fuzzy, 0 obsolete"
    ]
    with po.open("rb") as fp:
        catalog = read_po(fp, locale="de")
    changed = catalog["Analytics tools"]
    assert changed.fuzzy
    assert changed.string == "Statistik"
    assert '#| msgid "Analytics"' in po.read_text(encoding="utf-8")
    assert catalog.get("Analytics") is None
    assert not catalog.obsolete
    lines = i18n_workflow.run(settings, "compile", "demo", None)
    assert lines[0] == f"locales/de/LC_MESSAGES/demo.mo: 1 of {N} translated, 2 fuzzy skipped"
    assert any("skipped fuzzy 'Reject all'" in line for line in lines)
    with po.with_suffix(".mo").open("rb") as fp:
        translations = Translations(fp, domain="demo")
    assert translations.gettext("Accept all") == "Alle akzeptieren"
    assert translations.gettext("Reject all") == "Reject all"  # fuzzy is never served
    assert translations.gettext("Analytics tools") == "Analytics tools"


def test_init_never_overwrites_a_translation(settings: Settings) -> None:
    i18n_workflow.run(settings, "extract", "demo", None)
    i18n_workflow.run(settings, "init", "demo", "fr")
    _edit(_po(settings, "fr"), "fr", {"Accept all": ("Tout accepter", False)})
    before = _po(settings, "fr").read_bytes()
    lines = i18n_workflow.run(settings, "init", "demo", "fr")
    assert "exists, not overwritten" in lines[0]
    assert _po(settings, "fr").read_bytes() == before


def test_init_of_a_locale_the_site_does_not_offer_says_so(settings: Settings) -> None:
    i18n_workflow.run(settings, "extract", "demo", None)
    lines = i18n_workflow.run(settings, "init", "demo", "sv")
    assert lines[1] == "note: add 'sv' to `locales` in banners/demo/site.toml to offer it"


@pytest.mark.parametrize(
    ("command", "site", "locale", "message", "hint"),
    [
        ("update", "demo", None, "no template", "i18n extract --site demo"),
        ("init", "demo", "xx_YY_ZZ", "unknown locale", "Babel identifiers"),
        ("init", "demo", None, "init needs a locale", "--locale"),
        ("extract", "nope", None, "missing site.toml", "copy banners/demo"),
        ("translate", "demo", None, "unknown i18n command", "extract, init"),
    ],
)
def test_mistakes_are_config_errors_with_hints(
    settings: Settings, command: str, site: str, locale: str | None, message: str, hint: str
) -> None:
    if command == "init" and locale:
        i18n_workflow.run(settings, "extract", "demo", None)
    with pytest.raises(ConfigError) as info:
        i18n_workflow.run(settings, command, site, locale)
    assert info.value.message.startswith(message)
    assert hint in info.value.hint


def test_a_broken_template_names_its_file(settings: Settings) -> None:
    (settings.banners_dir / "demo" / "banner.html").write_text("{% block x %}{{ _( }}")
    with pytest.raises(ConfigError) as info:
        i18n_workflow.run(settings, "extract", "demo", None)
    assert info.value.where.endswith("banners/demo/banner.html:1")


def test_cli_runs_the_workflow(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = ["--banners-dir", str(settings.banners_dir), "--locales-dir", str(settings.locales_dir)]
    assert main(["i18n", "extract", *dirs]) == 0
    assert main(["i18n", "init", "--site", "demo", "--locale", "it", *dirs]) == 0
    assert main(["i18n", "compile", *dirs]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"locales/demo.pot: wrote {N} messages",
        f"locales/it/LC_MESSAGES/demo.po: created with {N} messages to translate",
        f"locales/it/LC_MESSAGES/demo.mo: 0 of {N} translated, 0 fuzzy skipped",
    ]


def test_shipped_catalogs_are_current(tmp_path: Path) -> None:
    """The committed .pot equals a fresh extract, and update changes no committed .po."""
    locales = tmp_path / "locales"
    shutil.copytree(ROOT / "locales", locales)
    settings = Settings(banners_dir=ROOT / "banners", locales_dir=locales, reload=False)
    assert "unchanged" in i18n_workflow.run(settings, "extract", None, None)[0]
    i18n_workflow.run(settings, "update", None, None)
    for path in sorted((ROOT / "locales").rglob("*.po")):
        assert (locales / path.relative_to(ROOT / "locales")).read_bytes() == path.read_bytes()
