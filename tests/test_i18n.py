"""Accept-Language parsing, locale negotiation, ?lang= validation and the demo site's catalogs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from babel import localedata
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.errors import BadRequest, ConfigError
from gateway.core.i18n import (
    Negotiator,
    bcp47,
    direction,
    negotiate,
    parse_accept_language,
    parse_lang_param,
)
from gateway.sites.texts import BASE_TEXTS, DESCRIPTIONS, EMAIL_TEXTS, all_msgids

ROOT = Path(__file__).resolve().parent.parent
DEMO = tomllib.loads((ROOT / "banners" / "demo" / "site.toml").read_text(encoding="utf-8"))
DEMO_LOCALES: list[str] = DEMO["locales"]
DEMO_DEFAULT: str = DEMO["default_locale"]

# ---------------------------------------------------------------- parse_accept_language


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", ()),
        ("de", (("de", 1.0),)),
        # What Chrome, Firefox and Safari send, verbatim.
        (
            "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7",
            (("de-DE", 1.0), ("de", 0.9), ("en-US", 0.8), ("en", 0.7)),
        ),
        ("en-US,en;q=0.5", (("en-US", 1.0), ("en", 0.5))),
        ("zh-TW,zh;q=0.9", (("zh-TW", 1.0), ("zh", 0.9))),
        # Sorted by q, stable for ties (header order kept).
        ("fr;q=0.3, de;q=0.7, it;q=0.7, en", (("en", 1.0), ("de", 0.7), ("it", 0.7), ("fr", 0.3))),
        # Lenient where real clients are: spaces, tabs, case, "_", empty elements, "Q=".
        (" en-us ; Q = 0.5 ,\tDE_de ,, ", (("de-DE", 1.0), ("en-US", 0.5))),
        ("ZH-HANT-tw", (("zh-Hant-TW", 1.0),)),
        ("es-419", (("es-419", 1.0),)),
        ("x-klingon;q=0.1, i-default", (("i-default", 1.0), ("x-klingon", 0.1))),
        # The wildcard is kept; q=0 means "not acceptable" and is dropped.
        ("*", (("*", 1.0),)),
        ("de, *;q=0.1", (("de", 1.0), ("*", 0.1))),
        ("fr;q=0, de;q=0.000, en;q=1.000", (("en", 1.0),)),
        ("en;q=0.001", (("en", 0.001),)),
        ("en;q=1.", (("en", 1.0),)),
        (", ".join(f"l{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(32)), None),
        ("a" * 8 + "-" + "b" * 8, (("aaaaaaaa-bbbbbbbb", 1.0),)),
        ("de" + " " * 1022, (("de", 1.0),)),  # exactly at the length bound
    ],
)
def test_parse_accept_language(header: str, expected: tuple[tuple[str, float], ...] | None) -> None:
    parsed = parse_accept_language(header)
    if expected is None:  # 32 ranges: the bound itself is allowed
        assert len(parsed) == 32
        assert parsed[0] == ("laa", 1.0)
    else:
        assert parsed == expected


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("de" + " " * 1023, "longer than 1024 characters"),
        ("en;q=0.5," * 200, "longer than 1024 characters"),
        (",".join(["de"] * 33), "more than 32 language ranges"),
        ("deutsch-übersetzt", "non-ASCII"),
        ("日本語", "non-ASCII"),
        ("en;q=2", "invalid q-value"),
        ("en;q=1.5", "invalid q-value"),
        ("en;q=1.001", "invalid q-value"),
        ("en;q=-0.5", "invalid q-value"),
        ("en;q=0.8333", "invalid q-value"),  # RFC 9110: at most three decimals
        ("en;q=abc", "invalid q-value"),
        ("en;q=", "invalid q-value"),
        ("en;q=0.5;q=0.4", "invalid q-value"),
        ("en;level=1", "invalid language range"),
        ("en;", "invalid language range"),
        ("e1", "invalid language range"),
        ("1en", "invalid language range"),
        ("en-", "invalid language range"),
        ("-en", "invalid language range"),
        ("en--us", "invalid language range"),
        ("en-*", "invalid language range"),
        ("abcdefghi", "invalid language range"),
        ("en us", "invalid language range"),
        ("<script>alert(1)</script>", "invalid language range"),
        ("en\x00", "invalid language range"),
    ],
)
def test_parse_accept_language_rejects(header: str, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_accept_language(header)
    error = caught.value
    assert (error.code, error.field, error.status_code) == (
        "invalid_header",
        "Accept-Language",
        400,
    )
    assert error.detail.startswith("Accept-Language: ")
    assert message in error.detail
    assert len(error.detail) < 120  # the offending input is quoted, never echoed in full


# ---------------------------------------------------------------- negotiate

SITE = ["en", "de", "fr", "es", "it", "nl", "pt_BR", "zh_Hans", "zh_Hant", "ja", "ko", "ar"]
WIDE = ["en", "de", "pt_BR", "zh_Hans", "zh_Hant", "es", "es_419", "nb", "ar"]


@pytest.mark.parametrize(
    ("preferred", "available", "expected"),
    [
        # Chinese: script decides, via likely subtags and CLDR parents (zh_Hant_MO → zh_Hant_HK).
        (["zh-TW"], SITE, "zh_Hant"),
        (["zh-HK"], SITE, "zh_Hant"),
        (["zh-MO"], SITE, "zh_Hant"),
        (["zh-Hant"], SITE, "zh_Hant"),
        (["zh_Hant_TW"], SITE, "zh_Hant"),
        (["zh-CN"], SITE, "zh_Hans"),
        (["zh-SG"], SITE, "zh_Hans"),
        (["zh"], SITE, "zh_Hans"),
        (["zh-Hans-TW"], SITE, "zh_Hans"),  # an explicit script beats the region's usual one
        (["cmn"], SITE, "zh_Hans"),  # macro-language alias
        (["zh-TW"], ["en", "zh_Hans"], "en"),  # scripts never cross
        (["zh-TW", "zh"], ["en", "zh_Hans"], "zh_Hans"),
        (["zh"], ["en", "zh_Hant"], "en"),
        # Spanish: Latin American regions share es_419 (CLDR parent), else plain es.
        (["es-MX"], WIDE, "es_419"),
        (["es-AR"], WIDE, "es_419"),
        (["es-US"], WIDE, "es_419"),
        (["es-MX"], SITE, "es"),
        (["es-ES"], WIDE, "es"),
        (["es"], WIDE, "es"),
        (["es"], ["en", "es_419"], "es_419"),
        (["es"], ["en", "es_419", "es_ES"], "es_ES"),  # likely region of es is ES
        (["es-419"], SITE, "es"),
        # Norwegian: no is the macro-language of nb (and nn falls back to nb through it).
        (["no"], WIDE, "nb"),
        (["nb-NO"], WIDE, "nb"),
        (["no-NO"], WIDE, "nb"),
        (["nn"], WIDE, "nb"),
        (["nb"], ["en", "no"], "no"),
        # Portuguese: regions cross within the language, the closest offer first.
        (["pt-BR"], SITE, "pt_BR"),
        (["pt"], SITE, "pt_BR"),
        (["pt-PT"], SITE, "pt_BR"),  # better than the default language
        (["pt-PT"], ["en", "pt", "pt_BR"], "pt"),
        (["pt-PT"], ["en", "pt_BR", "pt_PT"], "pt_PT"),
        (["pt-AO"], ["en", "pt_BR", "pt_PT"], "pt_PT"),  # CLDR: pt_AO's parent is pt_PT
        (["pt"], ["en", "pt_PT", "pt_BR"], "pt_BR"),  # likely region of pt is BR
        (["pt-BR"], ["en", "pt"], "pt"),
        # English: the en_001 family (en-GB, en-IN, en-AU) prefers en_GB when offered.
        (["en-GB"], SITE, "en"),
        (["en-US"], SITE, "en"),
        (["en-IN"], ["de", "en", "en_GB"], "en_GB"),
        (["en-US"], ["de", "en_US", "en_GB"], "en_US"),
        (["en"], ["de", "en_GB", "en_US"], "en_US"),
        (["en-UK"], ["de", "en", "en_GB"], "en_GB"),  # deprecated region alias
        # Regions a language is not usually written in still fall back to the language.
        (["de-US"], SITE, "de"),
        (["de-CH-1996"], SITE, "de"),
        (["fr-CA"], SITE, "fr"),
        (["ar-MA"], SITE, "ar"),
        (["ja-JP"], SITE, "ja"),
        (["ko-KR"], SITE, "ko"),
        (["nl-BE"], SITE, "nl"),
        (["it-CH"], SITE, "it"),
        (["iw"], ["en", "he"], "he"),  # deprecated language code
        # CLDR one-way substitutes, only when the language itself is not offered.
        (["yue-HK"], SITE, "zh_Hant"),
        (["yue"], ["en", "zh_Hans"], "en"),
        (["yue"], ["en", "zh_Hant", "yue"], "yue"),
        (["gsw-CH"], SITE, "de"),
        (["lb"], SITE, "de"),
        # Order: the first range that matches wins, however specific a later one is.
        (["fr-CH", "fr", "de"], SITE, "fr"),
        (["sv", "da", "de"], SITE, "de"),
        (["xx", "tlh", "ko"], SITE, "ko"),
        # Unknown, unoffered and wildcard → the default.
        (["xx"], SITE, "en"),
        (["sv"], SITE, "en"),
        ([], SITE, "en"),
        (["*"], SITE, "en"),
        (["sv", "*", "de"], SITE, "en"),
        (["i-default"], SITE, "en"),
        (["x-klingon"], SITE, "en"),
        (["und"], SITE, "en"),
    ],
)
def test_negotiate(preferred: list[str], available: list[str], expected: str) -> None:
    assert negotiate(preferred, available, available[0]) == expected


def test_negotiate_falls_back_to_the_site_default() -> None:
    assert negotiate(["sv", "xx"], ["de", "fr", "it"], "fr") == "fr"
    assert negotiate(["*", "de"], ["de", "fr", "it"], "it") == "it"


def test_negotiate_rejects_unknown_site_locales() -> None:
    with pytest.raises(ConfigError, match="unknown locale 'klingon'"):
        negotiate(["de"], ["en", "klingon"], "en")
    with pytest.raises(ConfigError, match="unknown locale 'en-'"):
        negotiate(["de"], ["en-"], "en")


# ---------------------------------------------------------------- parse_lang_param


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("de", "de"),
        ("DE", "de"),
        ("pt-BR", "pt_BR"),
        ("pt_br", "pt_BR"),
        ("zh-Hant", "zh_Hant"),
        ("zh_hant_tw", "zh_Hant_TW"),
        ("ZH-HANS-CN", "zh_Hans_CN"),
        ("es-419", "es_419"),
        ("nb", "nb"),
        ("ca-ES-valencia", "ca_ES_VALENCIA"),
        ("de-CH-1996", "de_CH_1996"),
        ("fil", "fil"),
        ("de-CH-abcde-fghij-klmno-pqrst-uvwxy", "de_CH_ABCDE_FGHIJ_KLMNO_PQRST_UVWXY"),  # 35
        ("xx", "xx"),  # well-formed; negotiation decides it is not offered
    ],
)
def test_parse_lang_param(value: str, expected: str) -> None:
    assert parse_lang_param(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "*",
        "d",
        "deutsch-x",
        "e1",
        "en-",
        "en--US",
        "en US",
        "en;q=1",
        "en,de",
        "en-U",
        "en-Latn-Latn",
        "en-x-private",
        "zh-Hant-TW-" + "a" * 25,  # 36 characters: over the bound
        "de-CH-" + "abcde-" * 5 + "abcde",  # well-formed variants, but longer than 35
        "ελληνικά",
        "de\n",
        "../../etc/passwd",
    ],
)
def test_parse_lang_param_rejects(value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_lang_param(value)
    error = caught.value
    assert (error.code, error.field, error.status_code) == ("invalid_parameter", "lang", 400)
    assert error.detail.startswith("lang: ")


# ---------------------------------------------------------------- Negotiator


@pytest.mark.parametrize(
    ("accept_language", "lang_param", "expected"),
    [
        (None, None, "en"),
        ("", None, "en"),
        ("de-DE,de;q=0.9,en;q=0.8", None, "de"),
        ("zh-TW,zh;q=0.9,en-US;q=0.8,en;q=0.7", None, "zh_Hant"),
        ("sv-SE,sv;q=0.9", None, "en"),
        ("sv, ja;q=0.5", None, "ja"),
        ("ar-SA,ar;q=0.9,en;q=0.8", None, "ar"),
        # ?lang= comes first, the header after it.
        ("de-DE,de;q=0.9", "fr", "fr"),
        ("de-DE,de;q=0.9", "zh-HK", "zh_Hant"),
        ("de-DE,de;q=0.9", "sv", "de"),  # an unoffered override falls through to the header
        (None, "sv", "en"),
        (None, "pt-PT", "pt_BR"),
        ("ja", "", "ja"),  # a blank ?lang= is no override
    ],
)
def test_negotiator_choose(
    accept_language: str | None, lang_param: str | None, expected: str
) -> None:
    negotiator = Negotiator(SITE, "en")
    assert negotiator.choose(accept_language, lang_param) == expected
    assert negotiator.choose(accept_language, lang_param) == expected  # the cached answer agrees


def test_negotiator_caches_per_raw_header_within_its_bound() -> None:
    negotiator = Negotiator(SITE, "en", cache_size=2)
    assert negotiator.choose("ko", None) == "ko"
    assert negotiator.choose("ja", None) == "ja"
    assert negotiator.choose("ko", "de") == "de"  # ?lang= is part of the key
    assert len(negotiator._cache) == 2
    assert ("ko", "de") in negotiator._cache
    assert ("ko", None) not in negotiator._cache  # least recently used went first
    assert negotiator.choose("ko", None) == "ko"


def test_negotiator_rejects_bad_input_without_caching_it() -> None:
    negotiator = Negotiator(SITE, "en")
    with pytest.raises(BadRequest) as header_error:
        negotiator.choose("en;q=5", None)
    assert header_error.value.field == "Accept-Language"
    with pytest.raises(BadRequest) as param_error:
        negotiator.choose("de", "<b>")
    assert param_error.value.field == "lang"
    assert len(negotiator._cache) == 0


def test_negotiator_validates_the_site() -> None:
    with pytest.raises(ConfigError, match="default locale 'sv' is not among"):
        Negotiator(SITE, "sv")
    with pytest.raises(ConfigError, match="unknown locale 'xx'"):
        Negotiator(["en", "xx"], "en")
    assert Negotiator(DEMO_LOCALES, DEMO_DEFAULT).choose("zh-HK", None) == "zh_Hant"


HEADERS = st.text(max_size=80) | st.lists(
    st.sampled_from(["de", "zh-TW", "pt_br", "*", ";q=0.5", ";q=0", ",", " ", "x", "-"])
).map("".join)
DEMO_NEGOTIATOR = Negotiator(SITE, "en")


@settings(max_examples=150, deadline=None)
@given(HEADERS)
def test_any_header_is_either_parsed_or_rejected_cleanly(header: str) -> None:
    outcome: tuple[tuple[str, float], ...] | BadRequest
    try:
        outcome = parse_accept_language(header)
    except BadRequest as error:
        outcome = error
    if isinstance(outcome, BadRequest):
        assert outcome.field == "Accept-Language"
    else:
        weights = [q for _, q in outcome]
        assert weights == sorted(weights, reverse=True)
        assert all(0 < q <= 1 for q in weights)
        assert DEMO_NEGOTIATOR.choose(header, None) in SITE


# ---------------------------------------------------------------- bcp47, direction


@pytest.mark.parametrize(
    ("identifier", "tag", "text_direction"),
    [
        ("en", "en", "ltr"),
        ("de", "de", "ltr"),
        ("pt_BR", "pt-BR", "ltr"),
        ("zh_Hans", "zh-Hans", "ltr"),
        ("zh_Hant", "zh-Hant", "ltr"),
        ("es_419", "es-419", "ltr"),
        ("ja", "ja", "ltr"),
        ("ar", "ar", "rtl"),
        ("ar_EG", "ar-EG", "rtl"),
        ("ar_DE", "ar-DE", "rtl"),  # no CLDR data of its own: the language's script decides
        ("he", "he", "rtl"),
        ("fa", "fa", "rtl"),
        ("ur", "ur", "rtl"),
        ("yi", "yi", "rtl"),
        ("uz_Arab", "uz-Arab", "rtl"),
        ("uz_Latn", "uz-Latn", "ltr"),
    ],
)
def test_bcp47_and_direction(identifier: str, tag: str, text_direction: str) -> None:
    assert bcp47(identifier) == tag
    assert direction(identifier) == text_direction


def test_direction_of_an_unknown_locale_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown locale 'xx'"):
        direction("xx")


def test_direction_agrees_with_cldr_for_every_locale_babel_knows() -> None:
    """The direction comes from the script (RTL_SCRIPTS), not from each locale's CLDR data,
    which cost ~1 MB of every worker's memory per locale: it must equal CLDR's character
    order for all ~800 locales, so no locale is laid out the wrong way round. CLDR's `ttb`
    (Mongolian script, written top to bottom) is `ltr` for HTML's `dir`, which knows no
    vertical order (that is CSS `writing-mode`)."""
    from babel import Locale

    wrong = {
        name: cldr
        for name in localedata.locale_identifiers()
        if direction(name) != {"rtl": "rtl"}.get(cldr := Locale.parse(name).text_direction, "ltr")
    }
    assert wrong == {}


def test_every_demo_locale_has_a_direction() -> None:
    directions = {locale: direction(locale) for locale in DEMO_LOCALES}
    assert {locale for locale, d in directions.items() if d == "rtl"} == {"ar"}


# ---------------------------------------------------------------- the demo site's catalogs

# Python-format placeholders: %(name)s, %s, %d… and str.format fields {name}.
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa%]|\{[^{}]*\}")


def _demo_msgids() -> set[str]:
    purposes = DEMO["purposes"]
    return {*all_msgids(), *(p["name"] for p in purposes), *(p["description"] for p in purposes)}


def _catalog(path: Path) -> Catalog:
    with path.open("rb") as handle:
        catalog: Catalog = read_po(handle, domain="demo")
    return catalog


def test_demo_msgids_cover_texts_and_purposes() -> None:
    ids = _demo_msgids()
    assert set(BASE_TEXTS.values()) <= ids
    assert set(DESCRIPTIONS.values()) <= ids
    assert set(EMAIL_TEXTS.values()) <= ids
    assert "Strictly necessary" in ids
    assert len(ids) == (
        len(BASE_TEXTS) + len(DESCRIPTIONS) + len(EMAIL_TEXTS) + 2 * len(DEMO["purposes"])
    )


def test_demo_template_lists_every_msgid() -> None:
    template = _catalog(ROOT / "locales" / "demo.pot")
    # Templates may add their own `{% trans %}` strings later: a superset is fine.
    assert {m.id for m in template if m.id} >= _demo_msgids()
    assert all(m.locations for m in template if m.id)


@pytest.mark.parametrize("locale", [loc for loc in DEMO_LOCALES if loc != DEMO_DEFAULT])
def test_demo_catalog_is_complete(locale: str) -> None:
    path = ROOT / "locales" / locale / "LC_MESSAGES" / "demo.po"
    catalog = _catalog(path)
    assert str(catalog.locale) == locale
    assert catalog.charset == "utf-8"
    assert catalog.plural_forms.startswith("nplurals=")
    header = dict(catalog.mime_headers)
    assert header["Language"] == locale
    assert header["Content-Type"] == "text/plain; charset=utf-8"
    assert not catalog.fuzzy
    messages = [m for m in catalog if m.id]
    assert {m.id if isinstance(m.id, str) else m.id[0] for m in messages} >= _demo_msgids()
    for message in messages:
        # Plural entries have a tuple of ids and of strings: check every form the same way.
        ids = (message.id,) if isinstance(message.id, str) else tuple(message.id)
        string = message.string
        forms = (string,) if isinstance(string, str) else tuple(string or ())
        where = f"{locale}: {ids[0]!r}"
        assert forms, f"{where} has no msgstr"
        assert all(form.strip() for form in forms), f"{where} is untranslated"
        assert not message.fuzzy, f"{where} is fuzzy"
        # Loanwords and names many languages keep as they are.
        same = {"OK", "Marketing", "SMS", "WeChat", "Newsletter", "Shop"}
        assert forms != ids or ids[0] in same, f"{where} is the English text"
        for form in forms:
            assert sorted(_PLACEHOLDER.findall(form)) == sorted(_PLACEHOLDER.findall(ids[-1])), (
                f"{where}: placeholders differ"
            )
        assert message.locations, f"{where} has no #: location"
    assert not catalog.obsolete


def test_placeholder_check_sees_python_format() -> None:
    assert _PLACEHOLDER.findall("Hi %(name)s, %d items, {count} left, 100%%") == [
        "%(name)s",
        "%d",
        "{count}",
        "%%",
    ]
