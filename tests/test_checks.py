"""`check`: every problem a marketer or translator can make is reported with file, key and hint."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from babel.messages.pofile import read_po, write_po

from gateway.cli import checks
from gateway.cli.main import main
from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.serving import validation
from gateway.sites.catalog import load_site
from tests.helpers import GEOIP_DIR, ROOT, shipped_rules


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    shutil.copytree(ROOT / "banners" / "demo", tmp_path / "banners" / "demo")
    shutil.copytree(ROOT / "locales", tmp_path / "locales")
    # Three locales keep each full check (every locale and rule rendered) well under a second.
    toml = tmp_path / "banners" / "demo" / "site.toml"
    lines = toml.read_text(encoding="utf-8").splitlines()
    toml.write_text(
        "\n".join(
            'locales = ["en", "de", "fr"]' if line.startswith("locales =") else line
            for line in lines
        )
        + "\n",
        encoding="utf-8",
    )
    return Settings(
        banners_dir=tmp_path / "banners",
        locales_dir=tmp_path / "locales",
        data_dir=tmp_path / "data",
        reload=False,
    )


def _po(settings: Settings, locale: str = "de") -> Path:
    return settings.locales_dir / locale / "LC_MESSAGES" / "demo.po"


def _translate(
    settings: Settings,
    msgid: str | tuple[str, str],
    string: str | tuple[str, ...],
    *,
    fuzzy: bool = False,
    locale: str = "de",
) -> None:
    """Edit one entry as a .po editor would, adding it if the catalog lacks it."""
    path = _po(settings, locale)
    with path.open("rb") as fp:
        catalog = read_po(fp, locale=locale)
    key = msgid[0] if isinstance(msgid, tuple) else msgid
    message = catalog.get(key) or catalog.add(msgid)
    message.string = string
    if fuzzy:
        message.flags.add("fuzzy")
    with path.open("wb") as fp:
        write_po(fp, catalog)


def _template(settings: Settings, name: str, text: str) -> None:
    (settings.banners_dir / "demo" / name).write_text(text, encoding="utf-8")


def _edit_toml(settings: Settings, old: str, new: str, drop_after: int = 0) -> None:
    """Replace one line of the demo's site.toml (and drop the ``drop_after`` lines after it)."""
    toml = settings.banners_dir / "demo" / "site.toml"
    lines = toml.read_text(encoding="utf-8").splitlines()
    at = lines.index(old)
    lines[at : at + 1 + drop_after] = [] if drop_after else [new]
    toml.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _append_toml(settings: Settings, text: str) -> None:
    toml = settings.banners_dir / "demo" / "site.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + text, encoding="utf-8")


def test_shipped_tree_has_no_errors_and_full_coverage() -> None:
    report = checks.run_checks(
        Settings(banners_dir=ROOT / "banners", locales_dir=ROOT / "locales", reload=False)
    )
    assert report.errors == []
    coverage = [line for line in report.notes if "translated (" in line]
    demo = load_site(ROOT / "banners" / "demo", ROOT / "locales", shipped_rules()).site
    assert len(coverage) == len(demo.locales) - 1  # every locale but the default one
    assert all("100% translated" in line for line in coverage)
    assert report.lines()[-1].startswith("ok: 0 error(s)")


def _plural_gap(s: Settings) -> None:
    _template(
        s,
        "banner.html",
        '{% extends "default:banner.html" %}{% block footer %}'
        '{{ ngettext("%(num)d partner", "%(num)d partners", 3) }}{% endblock %}',
    )
    _translate(s, ("%(num)d partner", "%(num)d partners"), ("%(num)d Partner", ""))


def _placeholder_typo(s: Settings) -> None:
    _template(
        s,
        "banner.html",
        '{% extends "default:banner.html" %}{% block footer %}'
        '{{ _("Sold by %(name)s", name=site.name) }}{% endblock %}',
    )
    _translate(s, "Sold by %(name)s", "Verkauft von %(nom)s")


Edit = Callable[[Settings], object]
CASES: list[tuple[str, Edit, str, str, str]] = [
    # (name, edit, level, where ends with, message part)
    (
        "fuzzy",
        lambda s: _translate(s, "Accept all", "Alle annehmen", fuzzy=True),
        "warning",
        "de/LC_MESSAGES/demo.po",
        "fuzzy entry 'Accept all': compile skips it",
    ),
    (
        "untranslated",
        lambda s: _translate(s, "Reject all", ""),
        "warning",
        "de/LC_MESSAGES/demo.po",
        "1 untranslated: 'Reject all'",
    ),
    (
        "missing from catalog",
        lambda s: _append_toml(s, '\n[texts]\ntitle = "Cookies, but fair"\n'),
        "warning",
        "de/LC_MESSAGES/demo.po",
        "1 msgid(s) missing from the catalog",
    ),
    (
        "stale template",
        lambda s: _append_toml(s, '\n[texts]\ntitle = "Cookies, but fair"\n'),
        "warning",
        "locales/demo.pot",
        "the template lacks 1 of the site's texts",
    ),
    (
        "untranslated plural",
        _plural_gap,
        "warning",
        "de/LC_MESSAGES/demo.po",
        "plural forms missing in '%(num)d partner'",
    ),
    (
        "placeholder",
        _placeholder_typo,
        "error",
        "de/LC_MESSAGES/demo.po",
        "placeholders differ from the source",
    ),
    (
        "placeholder breaks rendering",
        _placeholder_typo,
        "error",
        "banners/demo",
        "KeyError: 'nom'",
    ),
    (
        "unsafe html",
        lambda s: _translate(s, "Customize", '<img src=x onerror="alert(1)">'),
        "error",
        "de/LC_MESSAGES/demo.po",
        "HTML outside the allow-list in 'Customize'",
    ),
    (
        "syntax",
        lambda s: _template(
            s,
            "banner.html",
            '{% extends "default:banner.html" %}\n{% block title %}{{ texts.title }{% endblock %}',
        ),
        "error",
        "banners/demo/banner.html:2",
        "template syntax: unexpected '}'",
    ),
    (
        "undefined variable",
        lambda s: _template(
            s,
            "preferences.html",
            '{% extends "default:preferences.html" %}'
            "{% block intro %}{{ texts.intro }}{% endblock %}",
        ),
        "error",
        "banners/demo",
        "has no attribute 'intro'",
    ),
    (
        "unknown template name",
        lambda s: _template(s, "baner.html", "<p>typo</p>"),
        "warning",
        "banners/demo/baner.html",
        "not one of banner.html, preferences.html",
    ),
    (
        "po syntax",
        lambda s: _po(s).write_text('msgid "x"\nmsgstr "y"\nbroken line\n'),
        "error",
        "de/LC_MESSAGES/demo.po",
        "invalid catalog",
    ),
    (
        "locale not offered",
        lambda s: None,
        "warning",
        "es/LC_MESSAGES/demo.po",
        "locale 'es' has a catalog but is not offered",
    ),
    (
        "unknown rule",
        lambda s: _append_toml(s, '\n[rules."DE"]\nrule = "gdrp"\n'),
        "error",
        "site.toml: rules",
        "unknown template 'gdrp'",
    ),
    ("short token", lambda s: None, "warning", "GATEWAY_ADMIN_TOKEN", "shorter than 16"),
    # DPDP Act s. 5(3): the notice in English or, at the visitor's option, an Eighth Schedule
    # language; the demo offers none of those.
    (
        "no Indian notice language",
        lambda s: None,
        "warning",
        "site.toml: locales",
        "visitors under rule dpdp may ask for the notice in one of as, bn, brx",
    ),
    # W4: the UK statistics exemption is claimed by fact (PECR Sch. A1 para 5; ICO: processor).
    (
        "exemption without a processor",
        lambda s: _edit_toml(s, "provider_is_processor = true", "provider_is_processor = false"),
        "error",
        "site.toml: purposes[1].exemption",
        "analytics claims the analytics exemption but provider_is_processor = true is not "
        "declared (ICO guidance",
    ),
    (
        "exemption claimed for the wrong types",
        lambda s: _edit_toml(
            s,
            'consent_mode = ["analytics_storage"]',
            'consent_mode = ["analytics_storage", "personalization_storage"]',
        ),
        "error",
        "site.toml: purposes[1].exemption",
        "outside the analytics exemption",
    ),
    (
        "exemption of another category",
        lambda s: _edit_toml(s, 'category = "analytics"', 'category = "functionality"'),
        "error",
        "site.toml: purposes[1].exemption",
        "outside the functionality exemption",
    ),
    (
        "no declaration at all",
        lambda s: _edit_toml(s, "[purposes.exemption]", "[purposes.unused]", drop_after=4),
        "warning",
        "site.toml: purposes[1]",
        "analytics needs consent under uk: an exemption is claimed by fact, not by category",
    ),
]


@pytest.mark.parametrize(
    ("name", "edit", "level", "where", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_each_problem_is_found_where_it_is(
    settings: Settings, name: str, edit: Edit, level: str, where: str, message: str
) -> None:
    edit(settings)
    if name == "short token":
        settings = settings.replace(admin_token="secret")
    report = checks.run_checks(settings)
    found = report.errors if level == "error" else report.warnings
    hits = [f for f in found if f.where.endswith(where) and message in f.message]
    assert hits, "\n".join(report.lines())
    assert all(f.hint for f in hits)
    if level == "warning":
        assert report.errors == [], "\n".join(report.lines())


def test_coverage_line_counts_fuzzy_and_untranslated(settings: Settings) -> None:
    _translate(settings, "Accept all", "Alle annehmen", fuzzy=True)
    _translate(settings, "Reject all", "")
    report = checks.run_checks(settings)
    with (ROOT / "locales" / "demo.pot").open("rb") as fp:
        n = len(read_po(fp))  # every text of the demo site
    assert (
        f"  de: {(n - 2) / n:.0%} translated ({n - 2}/{n}), 1 fuzzy, 1 untranslated" in report.notes
    )
    assert f"  fr: 100% translated ({n}/{n})" in report.notes


def test_validate_bundle_refuses_a_template_no_visitor_could_see(settings: Settings) -> None:
    _template(
        settings,
        "banner.html",
        '{% extends "default:banner.html" %}{% block title %}{{ title }}{% endblock %}',
    )
    bundle = load_site(settings.banners_dir / "demo", settings.locales_dir, shipped_rules())
    with pytest.raises(ConfigError) as info:
        validation.validate_bundle(bundle)
    # Found before any rendering: the sandbox's static check names the unknown variable.
    assert "unknown variable 'title'" in info.value.message


def test_lines_end_with_a_verdict(settings: Settings) -> None:
    _translate(settings, "Customize", "<script>x</script>")
    lines = checks.run_checks(settings).lines()
    assert lines[-1].startswith("FAILED: 1 error(s), ")
    assert any(line.startswith("error: ") and "(hint: " in line for line in lines)


@pytest.mark.parametrize(("edit", "code"), [(False, 0), (True, 1)])
def test_cli_exit_code_follows_errors(
    settings: Settings, capsys: pytest.CaptureFixture[str], edit: bool, code: int
) -> None:
    if edit:
        _translate(settings, "Save choices", "%(x)s speichern")
    argv = [
        "check",
        "--banners-dir",
        str(settings.banners_dir),
        "--locales-dir",
        str(settings.locales_dir),
        "--data-dir",
        str(settings.data_dir),
    ]
    assert main(argv) == code
    assert "site demo: banner_version" in capsys.readouterr().out


def test_validate_bundle_catches_a_translation_that_breaks_rendering(settings: Settings) -> None:
    _template(
        settings,
        "banner.html",
        '{% extends "default:banner.html" %}{% block footer %}'
        '{{ _("Sold by %(name)s", name=site.name) }}{% endblock %}',
    )
    _translate(settings, "Sold by %(name)s", "Verkauft von %(nom)s", locale="fr")
    bundle = load_site(settings.banners_dir / "demo", settings.locales_dir, shipped_rules())
    with pytest.raises(ConfigError) as info:
        validation.validate_bundle(bundle)
    assert "KeyError: 'nom'" in info.value.message
    assert "fr/" in info.value.message


def test_reload_validation_renders_every_rule_once_and_every_language(settings: Settings) -> None:
    bundle = load_site(settings.banners_dir / "demo", settings.locales_dir, shipped_rules())
    quick = validation.cases(bundle, every_rule=False)
    every = validation.cases(bundle, every_rule=True)
    rules = validation.rules_of(bundle)
    assert {rule.id for locale, rule in quick if locale == "en"} == {r.id for r in rules}
    assert {locale for locale, _ in quick} == {"en", "de", "fr"}
    assert {rule.model for locale, rule in quick if locale == "de"} == {r.model for r in rules}
    assert len(every) == 3 * len(rules)


@pytest.mark.parametrize(
    ("database", "level", "message"),
    [
        (GEOIP_DIR / "GeoIP2-City-Test.mmdb", "note", "geo database: path "),
        (GEOIP_DIR / "GeoIP2-City-Test-Invalid-Node-Count.mmdb", "error", ""),
        (GEOIP_DIR / "README.md", "error", "cannot open GeoIP database"),
        (GEOIP_DIR / "missing.mmdb", "error", "GeoIP database not found"),
    ],
    ids=["valid", "corrupt", "not a database", "missing"],
)
def test_the_geo_database_must_open(
    settings: Settings, database: Path, level: str, message: str
) -> None:
    report = checks.CheckReport()
    checks.check_geo(settings.replace(geoip_db=str(database)), report)
    if level == "note":
        assert report.errors == []
        assert any(n.startswith(message) for n in report.notes)
    else:
        assert len(report.errors) == 1
        assert report.errors[0].where == str(database)
        assert message in report.errors[0].message
        assert report.errors[0].hint


def test_an_eighth_schedule_locale_satisfies_the_notice_language_check(settings: Settings) -> None:
    toml = settings.banners_dir / "demo" / "site.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace(
            'locales = ["en", "de", "fr"]', 'locales = ["en", "de", "fr", "hi"]'
        ),
        encoding="utf-8",
    )
    report = checks.run_checks(settings)
    assert not [w for w in report.warnings if "rule dpdp" in w.message], report.lines()


def test_check_warns_when_no_public_address_is_set(settings: Settings) -> None:
    """Without GATEWAY_PUBLIC_URL or GATEWAY_PUBLIC_HOSTS, built URLs are relative (the
    gateway never trusts the request's Host for them): check says so, and stops saying it
    once either is set."""
    report = checks.CheckReport()
    checks.check_settings(settings.replace(public_url="", public_hosts=()), report)
    assert [w.where for w in report.warnings].count("GATEWAY_PUBLIC_URL") == 1
    for configured in (
        settings.replace(public_url="https://consent.example.com"),
        settings.replace(public_hosts=("consent.example.com",)),
    ):
        report = checks.CheckReport()
        checks.check_settings(configured, report)
        assert "GATEWAY_PUBLIC_URL" not in [w.where for w in report.warnings]
