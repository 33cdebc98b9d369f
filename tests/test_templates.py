"""Templates: block overrides, strictness, escaping, per-string fallback, generated reference."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po, write_po
from jinja2 import pass_context
from jinja2.runtime import Context

from gateway.core.errors import ConfigError
from gateway.serving.render import TEMPLATE_VARIABLES, Renderer
from gateway.sites.catalog import SiteBundle, load_site
from tests.helpers import ROOT, shipped, shipped_rules

GDPR = shipped_rules().rules["gdpr"]


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the demo site offering en, de and fr, and a copy of locales/."""
    site = tmp_path / "banners" / "demo"
    shutil.copytree(ROOT / "banners" / "demo", site)
    shutil.copytree(ROOT / "locales", tmp_path / "locales")
    toml = site / "site.toml"
    toml.write_text(
        re.sub(
            r"(?m)^locales = .*$", 'locales = ["en", "de", "fr"]', toml.read_text(encoding="utf-8")
        ),
        encoding="utf-8",
    )
    return site, tmp_path / "locales"


def _edit_po(locales: Path, locale: str, msgid: str, string: str, fuzzy: bool = False) -> None:
    path = locales / locale / "LC_MESSAGES" / "demo.po"
    with path.open("rb") as fp:
        catalog = read_po(fp, locale=locale)
    message = catalog.get(msgid) or catalog.add(msgid)
    message.string = string
    if fuzzy:
        message.flags.add("fuzzy")
    with path.open("wb") as fp:
        write_po(fp, catalog)


def _resolve(site: Path, locales: Path, locale: str = "en") -> tuple[SiteBundle, Any]:
    bundle = load_site(site, locales, shipped_rules())
    return bundle, Renderer().resolve(bundle, GDPR, locale, False)


def test_documented_variables_are_exactly_what_templates_get(tree: tuple[Path, Path]) -> None:
    site, locales = tree
    (site / "banner.html").write_text(
        '{% extends "default:banner.html" %}{% block footer %}<i id="keys">{{ keys() }}</i>'
        "{% endblock %}",
        encoding="utf-8",
    )
    bundle = load_site(site, locales, shipped_rules())
    renderer = Renderer()
    env = renderer.environment(bundle, "en")
    builtins = set(env.globals) | {"keys"}

    @pass_context
    def keys(context: Context) -> str:
        return ",".join(sorted(k for k in context.parent if k not in builtins))

    env.globals["keys"] = keys
    html = renderer.resolve(bundle, GDPR, "en", False).html
    shown = re.search(r'<i id="keys">([^<]*)</i>', html)
    assert shown is not None
    assert shown.group(1).split(",") == sorted(TEMPLATE_VARIABLES)


def test_one_block_override_keeps_the_rest(tree: tuple[Path, Path]) -> None:
    site, locales = tree
    (site / "banner.html").write_text(
        '{% extends "default:banner.html" %}'
        '{% block title %}<h2 id="cg-title" class="brand">{{ texts.title }} 🍪</h2>{% endblock %}',
        encoding="utf-8",
    )
    _, en = _resolve(site, locales)
    assert '<h2 id="cg-title" class="brand">We value your privacy 🍪</h2>' in en.html
    assert 'data-cg-action="reject_all">Reject all</button>' in en.html  # default buttons block
    assert 'data-cg-layer="preferences"' in en.preferences_html  # untouched template
    _, de = _resolve(site, locales, "de")
    assert f'class="brand">{shipped("de", "We value your privacy")} 🍪</h2>' in de.html


def test_own_strings_in_an_override_are_translated(tree: tuple[Path, Path]) -> None:
    site, locales = tree
    (site / "banner.html").write_text(
        '{% extends "default:banner.html" %}{% block footer %}<p class="promise">'
        '{{ _("We never sell data to %(who)s.", who=site.name) }}</p>{% endblock %}',
        encoding="utf-8",
    )
    _edit_po(locales, "de", "We never sell data to %(who)s.", "Wir verkaufen nie Daten an %(who)s.")
    _, de = _resolve(site, locales, "de")
    _, fr = _resolve(site, locales, "fr")
    assert '<p class="promise">Wir verkaufen nie Daten an Consent Gateway demo.</p>' in de.html
    assert '<p class="promise">We never sell data to Consent Gateway demo.</p>' in fr.html


def test_a_misspelt_variable_is_an_error_not_an_empty_string(tree: tuple[Path, Path]) -> None:
    site, locales = tree
    (site / "banner.html").write_text(
        '{% extends "default:banner.html" %}{% block title %}{{ text.title }}{% endblock %}',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        _resolve(site, locales)
    assert "'text' is undefined" in info.value.message


def test_copy_is_escaped(tree: tuple[Path, Path]) -> None:
    site, locales = tree
    toml = site / "site.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8")
        + '\n[texts]\ntitle = "<script>alert(1)</script> & more"\n',
        encoding="utf-8",
    )
    _, en = _resolve(site, locales)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in en.html
    assert "<script>" not in en.html


@pytest.mark.parametrize("fuzzy", [False, True], ids=["untranslated", "fuzzy"])
def test_a_missing_string_falls_back_for_that_key_only(
    tree: tuple[Path, Path], fuzzy: bool
) -> None:
    site, locales = tree
    _edit_po(locales, "de", "Accept all", "Alles klar" if fuzzy else "", fuzzy=fuzzy)
    _, de = _resolve(site, locales, "de")
    assert de.texts["accept_all"] == "Accept all"
    assert de.texts["reject_all"] == shipped("de", "Reject all")
    assert de.texts["title"] == shipped("de", "We value your privacy")
    assert de.fallbacks == ("accept_all",)
    assert 'data-cg-action="accept_all">Accept all</button>' in de.html
    _, fr = _resolve(site, locales, "fr")
    assert fr.fallbacks == ()


def test_fallback_goes_to_the_sites_default_language(tree: tuple[Path, Path]) -> None:
    site, locales = tree
    toml = site / "site.toml"
    text = toml.read_text(encoding="utf-8")
    text = text.replace('default_locale = "en"', 'default_locale = "de"')
    toml.write_text(text.replace('locales = ["en", "de", "fr"]', 'locales = ["de", "fr"]'))
    _edit_po(locales, "fr", "Reject all", "")
    _, fr = _resolve(site, locales, "fr")
    assert fr.texts["reject_all"] == shipped("de", "Reject all")
    assert fr.fallbacks == ("reject_all",)
    assert fr.texts["accept_all"] == shipped("fr", "Accept all")
