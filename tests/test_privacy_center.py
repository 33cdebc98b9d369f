"""My privacy center, served: localized in every site locale, locked down (no inline script, no
third party), with the preference model per product line and the texts each version showed."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from babel.messages.pofile import read_po
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from gateway.app import create_app
from tests.helpers import ROOT, editable_settings, shipped
from tests.pg import consent_body, secret_of

PAGE = "/v1/sites/demo/privacy-center"
TEMPLATE = ROOT / "gateway" / "templates" / "privacy_center.html"


def page_json(text: str, element_id: str) -> dict[str, object]:
    match = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', text)
    assert match is not None
    data: dict[str, object] = json.loads(match.group(1))
    return data


def test_page_is_localized_with_every_purpose_channel_and_topic(client: TestClient) -> None:
    r = client.get(PAGE + "?lang=de&region=DE")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<html lang="de" dir="ltr">' in r.text
    for msgid in ("My privacy center", "How we may contact you", "Your recent history"):
        assert shipped("de", msgid) in r.text
    for name in ("Unbedingt erforderlich", "Statistik", "Marketing", "Personalisierung"):
        assert name in r.text
    for msgid in ("SMS", "Push notifications", "Newsletter", "Offers", "Weekly", "Insurance"):
        assert shipped("de", msgid) in r.text
    # Every scope: all products, then each product line, each with its own form.
    assert re.findall(r'<form class="prefs" data-line="(\w*)"', r.text) == ["", "shop", "insurance"]


def _template_msgids() -> list[str]:
    found = re.findall(r'_\("((?:[^"\\]|\\.)+)"\)', TEMPLATE.read_text(encoding="utf-8"))
    return sorted(set(found))


@pytest.mark.parametrize(
    "locale", ["de", "fr", "es", "it", "nl", "pt_BR", "zh_Hans", "zh_Hant", "ja", "ko", "ar"]
)
def test_every_string_of_the_page_is_translated_in_every_demo_locale(locale: str) -> None:
    with (ROOT / "locales" / locale / "LC_MESSAGES" / "demo.po").open("rb") as fp:
        catalog = read_po(fp, locale=locale)
    for msgid in _template_msgids():
        message = catalog.get(msgid)
        assert message is not None and message.string, (locale, msgid)
        assert not message.fuzzy, (locale, msgid)


def test_arabic_page_is_right_to_left(client: TestClient) -> None:
    r = client.get(PAGE + "?lang=ar")
    assert '<html lang="ar" dir="rtl">' in r.text
    assert shipped("ar", "My privacy center") in r.text


def test_page_is_locked_down(client: TestClient) -> None:
    r = client.get(PAGE)
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    # Threat: an injected inline script. None runs: only the page's own script file does.
    assert "script-src 'self';" in csp and "unsafe-inline'; " not in csp.split("style-src")[0]
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"].startswith("private")
    scripts = re.findall(r"<script([^>]*)>", r.text)
    assert all('type="application/json"' in s or 'src="privacy-center.js"' in s for s in scripts)
    # Nothing is loaded from anywhere but this origin.
    assert not re.search(r'(src|href)="(https?:)?//', r.text)


def test_page_config_is_script_safe_and_relative_to_the_page(client: TestClient) -> None:
    text = client.get(PAGE + "?region=FR").text
    raw = re.search(r'id="cg-center-config">(.*?)</script>', text)
    assert raw is not None and "</" not in raw.group(1)
    config = page_json(text, "cg-center-config")
    urls = config["urls"]
    assert isinstance(urls, dict)
    # Relative: the page's calls stay on its origin, behind any proxy prefix.
    assert all(not u.startswith(("/", "http")) for u in urls.values())
    assert urls["preferences"] == "preferences" and urls["history"] == "subjects/{subject}/consents"
    labels = config["labels"]
    assert isinstance(labels, dict) and labels["channels"]["sms"] == "SMS"
    texts = page_json(text, "cg-center-texts")
    assert texts["prefs_saved"] == "Your contact preferences have been saved."


def test_the_script_is_served_from_the_same_origin(client: TestClient) -> None:
    r = client.get(PAGE + ".js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert b"cg-center-config" in r.content


def test_topics_and_purposes_are_grouped_by_product_line(tmp_path: Path) -> None:
    settings = editable_settings(tmp_path)
    toml = settings.banners_dir / "demo" / "site.toml"
    text = toml.read_text(encoding="utf-8")
    # Offers only for the shop; personalisation only for insurance.
    text = text.replace(
        'default_frequency = "weekly"\n', 'default_frequency = "weekly"\nproduct_lines = ["shop"]\n'
    )
    text = text.replace(
        'consent_mode = ["personalization_storage"]\n',
        'consent_mode = ["personalization_storage"]\nproduct_lines = ["insurance"]\n',
    )
    toml.write_text(text, encoding="utf-8")
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        html = client.get(PAGE + "?lang=en").text
    blocks = dict(
        re.findall(r'<form class="prefs" data-line="(\w*)"(.*?)</form>', html, flags=re.S)
    )
    assert 'name="topic:offers"' in blocks["shop"]
    assert 'name="topic:offers"' not in blocks["insurance"]
    assert 'name="topic:offers"' in blocks[""]  # the site-wide form covers every topic
    groups = dict(re.findall(r'<fieldset data-line="(\w*)">(.*?)</fieldset>', html, flags=re.S))
    assert set(groups) == {"", "insurance"}
    assert 'name="personalization"' in groups["insurance"]
    assert 'name="personalization"' not in groups[""]


def test_a_version_shows_the_texts_its_visitors_saw(client: TestClient) -> None:
    bundle = client.app.state.gateway.catalog.get("demo")  # type: ignore[attr-defined]
    version = bundle.banner_version
    deadline = time.monotonic() + 10
    while True:  # published to the embedded store at start-up
        r = client.get(f"/v1/sites/demo/versions/{version}?lang=de&rule=gdpr")
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.status_code == 200, r.text
    shown = r.json()
    assert shown["banner_version"] == version and shown["language"] == "de"
    assert shown["model"] == "opt-in"
    assert shown["texts"]["title"] == shipped("de", "We value your privacy")
    assert shown["purposes"]["analytics"]["name"] == "Statistik"
    assert "immutable" in r.headers["cache-control"]
    # The record's language as BCP 47 (zh-Hans) finds the catalog's zh_Hans.
    zh = client.get(f"/v1/sites/demo/versions/{version}?lang=zh-Hans&rule=ccpa").json()
    assert zh["language"] == "zh_Hans" and zh["model"] == "opt-out"


@given(
    version=st.text(max_size=80),
    lang=st.text(max_size=40),
    rule=st.text(max_size=80),
)
@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_hostile_version_queries_never_500(
    client: TestClient, version: str, lang: str, rule: str
) -> None:
    """Threat: junk versions, languages and rule ids probing the store or crashing the page."""
    r = client.get(
        "/v1/sites/demo/versions/" + (quote(version, safe="") or "x"),
        params={"lang": lang, "rule": rule},
    )
    assert r.status_code in (200, 400, 404), r.text
    assert r.headers["content-type"].startswith("application/json")


def test_unknown_site_and_bad_language(client: TestClient) -> None:
    assert client.get("/v1/sites/nope/privacy-center").json()["error"] == "unknown_site"
    assert client.get(PAGE + "?lang=%3Cscript%3E").json()["error"] == "invalid_parameter"
    assert client.get("/v1/sites/nope/versions/abcdef").json()["error"] == "unknown_site"
    assert client.get("/v1/sites/demo/versions/abcdef").json()["error"] == "unknown_version"


def _recorded(client: TestClient, name: str) -> str:
    bundle = client.app.state.gateway.catalog.get("demo")  # type: ignore[attr-defined]
    r = client.post("/v1/sites/demo/consents", json=consent_body(bundle, name))
    assert r.status_code == 201, r.text
    subject: str = r.json()["subject_id"]
    deadline = time.monotonic() + 10
    while (
        client.get(
            f"/v1/sites/demo/subjects/{subject}",
            headers={"Authorization": f"Subject {secret_of(name)}"},
        ).status_code
        == 404
    ):
        assert time.monotonic() < deadline, "the forwarder did not deliver"
        time.sleep(0.05)
    return subject


def test_a_subject_reads_its_own_state_with_its_secret(client: TestClient) -> None:
    subject = _recorded(client, "pc-own-state")
    r = client.get(
        f"/v1/sites/demo/subjects/{subject}",
        headers={"Authorization": f"Subject {secret_of('pc-own-state')}"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["consents"]["analytics"] is True and r.json()["subject_id"] == subject


def test_another_subjects_secret_or_none_reads_nothing(client: TestClient) -> None:
    """Threat: a subject id learnt from a log or a shared screen, read with another subject's
    secret, a malformed one or none: never the state."""
    subject = _recorded(client, "pc-victim")
    path = f"/v1/sites/demo/subjects/{subject}"
    other = client.get(path, headers={"Authorization": f"Subject {secret_of('pc-attacker')}"})
    assert other.status_code == 403 and other.json()["error"] == "subject_secret_mismatch"
    assert client.get(path).status_code == 401  # no credential: the API key path
    bad = client.get(path, headers={"Authorization": "Subject not-hex"})
    assert bad.status_code == 400 and "consents" not in bad.text
    email = client.get(
        "/v1/sites/demo/subjects/ann@example.com",
        headers={"Authorization": f"Subject {secret_of('pc-victim')}"},
    )
    assert email.status_code in (403, 404, 422) and "consents" not in email.text


def test_the_state_carries_the_subjects_preference_changes(client: TestClient) -> None:
    subject = _recorded(client, "pc-history")
    secret = secret_of("pc-history")
    r = client.post(
        "/v1/sites/demo/preferences",
        json={"subject_secret": secret, "product_line": "shop",
              "preferences": {"channels": {"sms": False}}},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 10
    while True:
        h = client.get(
            f"/v1/sites/demo/subjects/{subject}", headers={"Authorization": f"Subject {secret}"}
        ).json()
        if h["preference_history"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (change,) = h["preference_history"]
    assert change["product_line"] == "shop" and change["preferences"]["channels"] == {"sms": False}
    assert "ip_truncated" not in change and "user_agent" not in change


@given(
    header=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200),
    subject=st.sampled_from(["0" * 32, "f" * 32, "not-an-id", "a" * 33, "ann@example.com"]),
)
@hsettings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_hostile_subject_credentials_never_500_nor_leak(
    client: TestClient, header: str, subject: str
) -> None:
    """Threat: forged, truncated or junk `Subject` credentials probing another subject's state."""
    r = client.get(
        f"/v1/sites/demo/subjects/{quote(subject, safe='@')}",
        headers={"Authorization": f"Subject {header}"},
    )
    assert r.status_code in (400, 401, 403, 404), r.text
    assert "preferences" not in r.json()


@given(
    lang=st.text(max_size=40),
    region=st.text(max_size=20),
    fragment=st.text(max_size=100),
)
@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_hostile_page_queries_never_500(
    client: TestClient, lang: str, region: str, fragment: str
) -> None:
    """Threat: junk languages and regions crashing the page, or echoed into it unescaped."""
    r = client.get(PAGE, params={"lang": lang, "region": region, "x": fragment})
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200 and "<" in fragment:
        assert fragment not in r.text  # never echoed (it is not even read)


def test_a_site_overrides_one_block_in_the_sandbox(tmp_path: Path) -> None:
    settings = editable_settings(tmp_path)
    (settings.banners_dir / "demo" / "privacy_center.html").write_text(
        '{% extends "default:privacy_center.html" %}'
        '{% block footer %}<p id="own">{{ _("Questions? Call us.") }} {{ site.name }}</p>'
        "{% endblock %}",
        encoding="utf-8",
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        html = client.get(PAGE + "?lang=en").text
    assert '<p id="own">Questions? Call us. Consent Gateway demo</p>' in html
    assert 'id="contact"' in html  # the other blocks stay the built-in ones


def test_an_honoured_gpc_signal_is_shown(client: TestClient) -> None:
    r = client.get(PAGE + "?lang=en&region=US-CA", headers={"Sec-GPC": "1"})
    assert '<p class="who" id="gpc">' in r.text
    assert 'id="gpc"' not in client.get(PAGE + "?lang=en&region=US-CA").text
