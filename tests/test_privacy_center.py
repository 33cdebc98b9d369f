"""The privacy center page: localized, locked down, and driven by the visitor's receipt."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

PAGE = "/v1/sites/demo/privacy-center"


def test_page_is_localized_with_every_purpose(client: TestClient) -> None:
    r = client.get(PAGE + "?lang=de&region=DE")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<html lang="de" dir="ltr">' in r.text
    assert "Datenschutzeinstellungen" in r.text and "Ihr Einwilligungsverlauf" in r.text
    for name in ("Unbedingt erforderlich", "Statistik", "Marketing", "Personalisierung"):
        assert name in r.text


def test_arabic_page_is_right_to_left(client: TestClient) -> None:
    r = client.get(PAGE + "?lang=ar")
    assert '<html lang="ar" dir="rtl">' in r.text


def test_page_is_locked_down(client: TestClient) -> None:
    r = client.get(PAGE)
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"].startswith("private")


def test_page_config_is_script_safe_and_points_at_this_gateway(client: TestClient) -> None:
    text = client.get(PAGE + "?region=FR").text
    match = re.search(r"const C = (\{.*?\});\n", text)
    assert match is not None
    config = match.group(1)
    assert "</" not in config
    assert (
        '"record_url": "http://127.0.0.1:8000/v1/sites/demo/consents"' in config
        or '"record_url":"http://127.0.0.1:8000/v1/sites/demo/consents"' in config.replace(" ", "")
    )


def test_unknown_site_and_bad_language(client: TestClient) -> None:
    assert client.get("/v1/sites/nope/privacy-center").json()["error"] == "unknown_site"
    assert client.get(PAGE + "?lang=%3Cscript%3E").json()["error"] == "invalid_parameter"
