"""The serving endpoints end to end: config, banner, consent.js, caching headers, bad input."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from gateway.app import create_app
from tests.helpers import CITY_DB, OPS, make_settings

CONFIG = "/v1/sites/demo/config"


def test_config_carries_the_documented_fields(client: TestClient) -> None:
    r = client.get(CONFIG, headers={"Accept-Language": "de-DE,de;q=0.9", "CF-IPCountry": "DE"})
    assert r.status_code == 200
    body = r.json()
    for key in (
        "site",
        "banner_version",
        "consent_revision",
        "region",
        "language",
        "rule",
        "purposes",
        "texts",
        "consent_mode",
        "gpc",
        "record_url",
    ):
        assert key in body, key
    assert body["site"] == "demo"
    assert body["region"] == {"country": "DE", "subdivision": None, "source": "header"}
    assert body["language"] == "de"
    assert body["rule"]["id"] == "gdpr" and body["rule"]["model"] == "opt-in"
    assert body["texts"]["accept_all"] == "Alle akzeptieren"
    assert body["record_url"] == "http://127.0.0.1:8000/v1/sites/demo/consents"
    by_id = {p["id"]: p for p in body["purposes"]}
    assert by_id["necessary"]["essential"] and by_id["necessary"]["default"] is True
    assert by_id["analytics"]["default"] is False
    assert body["consent_mode"]["default"]["analytics_storage"] == "denied"
    assert body["consent_mode"]["wait_for_update"] > 0


@pytest.mark.parametrize(
    ("headers", "query", "rule", "language", "source"),
    [
        ({"CF-IPCountry": "US", "cf-region-code": "CA"}, "", "ccpa", "en", "header"),
        ({"CF-IPCountry": "CN", "Accept-Language": "zh-CN"}, "", "pipl", "zh-Hans", "header"),
        ({"CF-IPCountry": "TW", "Accept-Language": "zh-TW"}, "", "default", "zh-Hant", "header"),
        ({"CF-IPCountry": "BR", "Accept-Language": "pt-BR"}, "", "lgpd", "pt-BR", "header"),
        ({"CF-IPCountry": "XX"}, "", "default", "en", "unknown"),
        ({}, "?region=FR&lang=fr", "gdpr", "fr", "query"),
        ({"CloudFront-Viewer-Country": "GB"}, "?lang=ar", "uk", "ar", "header"),
    ],
)
def test_region_and_language_pick_rule_and_texts(
    client: TestClient, headers: dict[str, str], query: str, rule: str, language: str, source: str
) -> None:
    body = client.get(CONFIG + query, headers=headers).json()
    assert body["rule"]["id"] == rule
    assert body["language"] == language
    assert body["region"]["source"] == source


def test_gpc_under_ccpa_turns_off_sale_and_share(client: TestClient) -> None:
    headers = {"CF-IPCountry": "US", "cf-region-code": "CA", "Sec-GPC": "1"}
    body = client.get(CONFIG, headers=headers).json()
    assert body["gpc"] is True and body["gpc_applied"] is True
    marketing = next(p for p in body["purposes"] if p["id"] == "marketing")
    assert marketing["default"] is False
    assert body["consent_mode"]["default"]["ad_storage"] == "denied"


def test_banner_fragment_has_lang_and_dir(client: TestClient) -> None:
    r = client.get("/v1/sites/demo/banner?lang=ar&region=EG")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'lang="ar"' in r.text and 'dir="rtl"' in r.text


def test_snippet_inlines_the_config(client: TestClient) -> None:
    r = client.get("/v1/sites/demo/consent.js?region=DE&lang=de")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert "Alle akzeptieren" in r.text and "</script" not in r.text.lower()


def test_etag_and_304(client: TestClient) -> None:
    r = client.get(CONFIG + "?region=DE")
    etag = r.headers["etag"]
    assert r.headers["cache-control"].startswith("public")
    vary = r.headers["vary"].lower()
    assert "accept-language" in vary and "cf-ipcountry" in vary
    again = client.get(CONFIG + "?region=DE", headers={"If-None-Match": f'W/{etag}, "x"'})
    assert again.status_code == 304 and again.content == b""
    other = client.get(CONFIG + "?region=DE&lang=fr", headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.headers["etag"] != etag


def test_geoip_answers_are_private(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, geoip_db=str(CITY_DB))
    with TestClient(create_app(settings)) as c:
        # The test client's peer is "testclient", untrusted: its own address is used.
        r = c.get(CONFIG)
    assert r.headers["cache-control"].startswith("private")


@pytest.mark.parametrize(
    ("path", "headers", "status", "error"),
    [
        ("/v1/sites/nope/config", {}, 404, "unknown_site"),
        ("/v1/sites/demo/config?lang=%00%01", {}, 400, "invalid_parameter"),
        ("/v1/sites/demo/config?region=Germany", {}, 400, "invalid_parameter"),
        ("/v1/sites/demo/config?region=" + "D" * 500, {}, 400, "invalid_parameter"),
        ("/v1/sites/demo/config", {"Accept-Language": "x" * 5000}, 400, "invalid_header"),
        ("/v1/sites/demo/config", {"Accept-Language": "en;q=7"}, 400, "invalid_header"),
        ("/v1/sites/demo/consent.js", {"Accept-Language": b"\xe9"}, 400, "invalid_header"),
        ("/no/such/path", {}, 404, "not_found"),
    ],
)
def test_bad_input_gets_a_precise_json_error(
    client: TestClient, path: str, headers: dict[str, str], status: int, error: str
) -> None:
    r = client.get(path, headers=headers)
    assert r.status_code == status
    assert r.json()["error"] == error
    assert r.json()["detail"]


def test_method_not_allowed_is_json(client: TestClient) -> None:
    r = client.delete(CONFIG)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_gpc_well_known(client: TestClient) -> None:
    r = client.get("/.well-known/gpc.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["gpc"] is True and len(r.json()["lastUpdate"]) == 10


def test_two_locales_rendered_concurrently_never_mix(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    expected = {"de": "Alle akzeptieren", "fr": "Tout accepter", "ja": None, "ar": None}
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as c:
        reference = {
            lang: c.get(f"{CONFIG}?region=DE&lang={lang}").json()["texts"] for lang in expected
        }
        assert reference["de"]["accept_all"] == expected["de"]
        assert len({r["accept_all"] for r in reference.values()}) == len(expected)

        def fetch(i: int) -> tuple[str, dict[str, str]]:
            lang = list(expected)[i % len(expected)]
            # A new region each time defeats the body cache so rendering really runs.
            region = f"US-{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}"
            return lang, c.get(f"{CONFIG}?region={region}&lang={lang}").json()["texts"]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for lang, texts in pool.map(fetch, range(200)):
                assert texts["accept_all"] == reference[lang]["accept_all"]
                assert texts["title"] == reference[lang]["title"]


def test_health_ready_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz", headers=OPS)
    assert ready.status_code == 200 and "demo" in ready.json()["sites"]
    client.get(CONFIG)
    metrics = client.get("/metrics", headers=OPS)
    assert metrics.status_code == 200
    assert "gateway_http_requests_total" in metrics.text
    assert "consent_outbox_depth" in metrics.text
    assert "gateway_geoip_cache_hits_total" in metrics.text
    names = [f.name for f in text_string_to_metric_families(metrics.text)]
    assert len(names) == len(set(names)), "each metric family is exported once"
