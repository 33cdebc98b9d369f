"""The preference model in site.toml: parsed, cross-checked, extracted for translators."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po

from gateway.cli.checks import run_checks
from gateway.core.errors import ConfigError
from gateway.sites.catalog import load_site
from gateway.sites.i18n_workflow import build_template, used_msgids
from gateway.sites.sitefile import parse_site, read_site
from tests.helpers import ROOT, editable_settings, make_settings

DEMO = ROOT / "banners" / "demo"
SITE_TOML = DEMO / "site.toml"
LOCALES = ("de", "fr", "es", "it", "nl", "pt_BR", "zh_Hans", "zh_Hant", "ja", "ko", "ar")


def demo_data() -> dict[str, Any]:
    return tomllib.loads(SITE_TOML.read_text(encoding="utf-8"))


def test_the_demo_declares_channels_topics_frequencies_and_product_lines() -> None:
    model = read_site(DEMO).preferences
    assert [c.id for c in model.channels] == ["email", "sms", "push", "wechat"]
    assert [t.id for t in model.topics] == ["newsletter", "offers", "product_updates"]
    assert [p.id for p in model.product_lines] == ["shop", "insurance"]
    newsletter, offers, updates = model.topics
    assert newsletter.frequencies == ("weekly", "monthly")
    assert offers.frequencies == ("daily", "weekly", "monthly")
    assert updates.frequencies == () and updates.default_frequency is None
    assert model.all_identity_types[:5] == (
        "email",
        "phone",
        "customer_id",
        "wechat_openid",
        "wechat_unionid",
    )


def test_a_site_without_preferences_still_parses() -> None:
    data = demo_data()
    for key in ("channels", "topics", "frequencies", "product_lines"):
        data.pop(key)
    model = parse_site("demo", SITE_TOML, data).preferences
    assert model.channels == () and model.topics == () and list(model.messages()) == []


def test_purposes_and_topics_may_be_scoped_per_product_line() -> None:
    data = demo_data()
    data["purposes"][2]["product_lines"] = ["shop"]
    data["topics"][0]["product_lines"] = ["insurance"]
    data["identity_types"] = ["loyalty_card"]
    site = parse_site("demo", SITE_TOML, data)
    assert site.purposes[2].product_lines == ("shop",)
    assert site.preferences.topics[0].product_lines == ("insurance",)
    assert site.preferences.all_identity_types[-1] == "loyalty_card"


def _edit(path: list[Any], value: Any) -> dict[str, Any]:
    data = demo_data()
    target: Any = data
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "where", "message"),
    [
        (["topics", 0, "channels"], ["email", "fax"], "topics[0].channels", "unknown channel"),
        (["topics", 0, "channels"], [], "topics[0].channels", "at least one channel"),
        (["topics", 0, "frequencies"], ["hourly"], "topics[0].frequencies", "unknown frequency"),
        (["topics", 1, "default_frequency"], "yearly", "topics[1].default_frequency", "not one"),
        (["topics", 0, "product_lines"], ["garden"], "topics[0].product_lines", "unknown product"),
        (["topics", 0, "colour"], "red", "topics[0].colour", "unknown key"),
        (["topics", 0, "description"], KeyError, "topics[0].description", "missing"),
        (["topics", 1, "id"], "newsletter", "topics[1].id", "duplicate id"),
        (["channels", 0, "id"], "E-mail", "channels[0].id", "invalid id"),
        (["channels", 0], "email", "channels[0]", "expected a table"),
        (["channels"], {"id": "email"}, "channels", "expected list"),
        (["frequencies", 0, "name"], 7, "frequencies[0].name", "expected str"),
        (["purposes", 1, "product_lines"], ["garden"], "purposes[1].product_lines", "unknown"),
        (["identity_types"], ["email"], "identity_types", "built in"),
        (["identity_types"], ["Loyalty Card"], "identity_types", "invalid entry"),
    ],
)
def test_mistakes_name_the_file_and_key(
    path: list[Any], value: Any, where: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_site("demo", SITE_TOML, _edit(path, value))
    assert caught.value.where == f"{SITE_TOML}: {where}"
    assert message in caught.value.message


def test_every_string_of_the_model_goes_to_translators_with_a_comment() -> None:
    site = read_site(DEMO)
    template = build_template(site, DEMO, ROOT)
    used = used_msgids(site, DEMO)
    for msgid, comment in site.preferences.messages():
        message = template.get(msgid)
        assert message is not None and comment in message.auto_comments
        assert message.locations[0][0] == "banners/demo/site.toml"
        assert msgid in used


@pytest.mark.parametrize("locale", LOCALES)
def test_the_demo_model_is_translated_in_every_locale(locale: str) -> None:
    path = ROOT / "locales" / locale / "LC_MESSAGES" / "demo.po"
    with path.open("rb") as fp:
        catalog = read_po(fp, locale=locale)
    for msgid, _ in read_site(DEMO).preferences.messages():
        message = catalog.get(msgid)
        assert message is not None and message.string and not message.fuzzy, (locale, msgid)


def test_check_reports_the_model_and_its_mistakes(tmp_path: Path) -> None:
    report = run_checks(make_settings(tmp_path))
    assert not report.errors
    assert any("4 channels, 3 topics, 2 product lines" in note for note in report.notes)
    settings = editable_settings(tmp_path / "edited")
    toml = settings.banners_dir / "demo" / "site.toml"
    toml.write_text(toml.read_text().replace('channels = ["email", "push"]', 'channels = ["fax"]'))
    report = run_checks(settings)
    assert any(
        e.where.endswith("site.toml: topics[0].channels") and "unknown channel 'fax'" in e.message
        for e in report.errors
    )


def test_check_warns_when_the_identity_key_lives_in_the_database(tmp_path: Path) -> None:
    pg = make_settings(tmp_path, store_url="postgresql://postgres@127.0.0.1:5432/postgres")
    assert any(w.where == "GATEWAY_IDENTITY_KEY" for w in run_checks(pg).warnings)
    keyed = pg.replace(identity_key="k" * 32)
    assert not any(w.where == "GATEWAY_IDENTITY_KEY" for w in run_checks(keyed).warnings)


def test_a_new_topic_changes_the_texts_version_but_asks_nobody_again(tmp_path: Path) -> None:
    settings = editable_settings(tmp_path)
    before = load_site(settings.banners_dir / "demo", settings.locales_dir)
    toml = settings.banners_dir / "demo" / "site.toml"
    toml.write_text(
        toml.read_text()
        + '\n[[topics]]\nid = "events"\nname = "Events"\ndescription = "Openings."\n'
        'channels = ["email"]\n'
    )
    after = load_site(settings.banners_dir / "demo", settings.locales_dir)
    assert after.site.preferences.topic("events") is not None
    assert after.banner_version != before.banner_version
    assert after.consent_revision == before.consent_revision
