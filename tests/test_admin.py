"""Admin endpoints: bearer auth, the preview page, versions and reload."""

from __future__ import annotations

import html
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from babel.messages.pofile import read_po, write_po
from playwright.sync_api import Page, sync_playwright
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.core.settings import Settings
from tests.browser.harness import launch
from tests.helpers import OPS, ROOT, editable_settings, shipped

TOKEN = "admin-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENDPOINTS = [
    ("POST", "/admin/v1/reload"),
    ("GET", "/admin/v1/sites/demo/versions"),
    ("GET", "/admin/preview?site=demo&region=DE&lang=de"),
]


def _settings(tmp_path: Path) -> Settings:
    return editable_settings(tmp_path, admin_token=TOKEN)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A tree of its own, for tests that edit files."""
    return _settings(tmp_path)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the read-only tests: starting one per case would dominate their time."""
    settings = _settings(tmp_path_factory.mktemp("admin"))
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as c:
        yield c


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        (f"Bearer {TOKEN[:-1]}", 401),
        (f"Bearer {TOKEN}x", 401),
        (f"Basic {TOKEN}", 401),
        ("Basic " + __import__("base64").b64encode(f"u:{TOKEN}".encode()).decode(), 401),
        (TOKEN, 401),
        ("Bearer ", 401),
        (f"Bearer {TOKEN}", 200),
        (f"bearer {TOKEN}", 200),
    ],
)
def test_admin_needs_the_exact_bearer_token(
    client: TestClient, method: str, path: str, header: str | None, status: int
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = client.request(method, path, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"] == "unauthorized"
        assert "Bearer" in response.json()["detail"]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_admin_is_disabled_without_a_token(settings: Settings, method: str, path: str) -> None:
    with TestClient(create_app(settings.replace(admin_token=""))) as client:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer x"}):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 404
            assert response.json()["error"] == "admin_disabled"


def _frames(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'srcdoc="([^"]*)"', page)]


def test_preview_frames_the_public_snippet_per_locale(client: TestClient) -> None:
    response = client.get("/admin/preview?site=demo&region=DE&lang=de&lang=ja", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    page = response.text
    frames = _frames(page)
    assert len(frames) == 2
    urls = [re.search(r'<script src="([^"]+)"', f).group(1) for f in frames]  # type: ignore[union-attr]
    assert urls == [
        "/v1/sites/demo/consent.js?lang=de&region=DE",
        "/v1/sites/demo/consent.js?lang=ja&region=DE",
    ]
    # Clicks in a preview record nothing: the snippet may fetch its parts (the panel) only.
    assert all('connect-src http://127.0.0.1:8000/v1/sites/demo/parts/">' in f for f in frames)
    config = client.get("/v1/sites/demo/config?region=DE&lang=de").json()
    assert f"<code>{config['banner_version']}</code>" in page
    assert f"<code>{config['consent_revision']}</code>" in page
    assert "<code>gdpr</code> opt-in" in page
    assert "Deutsch · German" in page
    assert "日本語 · Japanese" in page
    # The framed snippet is public: no token needed, and it is the same for the visitor.
    snippet = client.get(urls[0])
    assert snippet.status_code == 200
    assert config["banner_version"] in snippet.text
    assert shipped("de", "We value your privacy") in snippet.text


def test_preview_rule_selector_picks_a_region_with_that_rule(client: TestClient) -> None:
    page = client.get("/admin/preview?site=demo&rule=ccpa&lang=en", headers=AUTH).text
    assert "<code>ccpa</code> opt-out" in page
    assert "consent.js?lang=en&amp;region=US-CA" in page
    assert 'value="US-CA"' in page
    page = client.get("/admin/preview?site=demo&region=DE&rule=ccpa", headers=AUTH).text
    assert "DE does not get the rule &#39;ccpa&#39;; showing a visitor in US-CA" in page
    page = client.get("/admin/preview?site=demo&rule=default", headers=AUTH).text
    assert "<code>default</code> opt-in" in page
    assert "region=ZZ" in page


def test_preview_defaults_and_negotiation(client: TestClient) -> None:
    page = client.get("/admin/preview", headers=AUTH).text
    assert len(_frames(page)) == 2  # the default language and one other, side by side
    page = client.get("/admin/preview?site=demo&lang=pt-BR&lang=xx", headers=AUTH).text
    assert "(asked for pt-BR)" in page
    assert "(asked for xx)" in page  # served in the default language
    assert "consent.js?lang=pt_BR" in page
    assert "region=" not in "".join(_frames(page))  # no region: detected like a visitor's


@pytest.mark.parametrize(
    ("query", "status"),
    [("site=nope", 404), ("site=demo&region=Germany", 400)],
)
def test_preview_bad_input(client: TestClient, query: str, status: int) -> None:
    assert client.get(f"/admin/preview?{query}", headers=AUTH).status_code == status


def test_preview_highlights_fallbacks(settings: Settings) -> None:
    path = settings.locales_dir / "de" / "LC_MESSAGES" / "demo.po"
    with path.open("rb") as fp:
        catalog = read_po(fp, locale="de")
    catalog["Accept all"].string = ""
    catalog["Analytics"].flags.add("fuzzy")
    with path.open("wb") as fp:
        write_po(fp, catalog)
    with TestClient(create_app(settings)) as client:
        page = client.get("/admin/preview?site=demo&region=DE&lang=de&lang=fr", headers=AUTH).text
    assert "2 text(s) shown in\n en, not translated: accept_all, purpose analytics: name" in page
    assert '<tr class="fallback"><td>accept_all</td><td>Accept all</td>' in page
    assert page.count('class="fallback"') == 1
    assert "Every text is translated" in page  # the fr column


def test_versions_lists_what_start_up_published(client: TestClient) -> None:
    body = client.get("/admin/v1/sites/demo/versions", headers=AUTH).json()
    assert [v["banner_version"] for v in body["versions"]] == [body["current"]]
    assert body["versions"][0]["consent_revision"] == body["consent_revision"]
    assert client.get("/admin/v1/sites/nope/versions", headers=AUTH).status_code == 404


def test_reload_swaps_valid_edits_and_refuses_broken_ones(settings: Settings) -> None:
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        _reload_cycle(client, settings)


def _reload_cycle(client: TestClient, settings: Settings) -> None:
    before = client.get("/v1/sites/demo/config?region=DE").json()["banner_version"]
    toml = settings.banners_dir / "demo" / "site.toml"
    toml.write_text(toml.read_text().replace('name = "Analytics"', 'name = "Audience"'))
    response = client.post("/admin/v1/reload", headers=AUTH)
    assert response.status_code == 200
    after = response.json()["sites"]["demo"]
    assert after != before
    assert client.get("/v1/sites/demo/config?region=DE").json()["banner_version"] == after
    versions = client.get("/admin/v1/sites/demo/versions", headers=AUTH).json()["versions"]
    assert {v["banner_version"] for v in versions} == {before, after}

    po = settings.locales_dir / "fr" / "LC_MESSAGES" / "demo.po"
    po.write_text(po.read_text(encoding="utf-8") + "\nmsgid broken\n", encoding="utf-8")
    response = client.post("/admin/v1/reload", headers=AUTH)
    assert response.status_code == 422
    assert response.json()["reloaded"] is False
    assert "fr/LC_MESSAGES/demo.po" in response.json()["error"]
    assert client.get("/v1/sites/demo/config?region=FR&lang=fr").json()["banner_version"] == after
    ready = client.get("/readyz", headers=OPS)
    assert ready.status_code == 503
    assert "fr/LC_MESSAGES/demo.po" in ready.json()["catalog_error"]
    page = client.get("/admin/preview?site=demo", headers=AUTH).text
    assert "the last reload was refused, this is the previous version" in page


def test_preview_gpc_signals_in_the_frame_only_when_asked(client: TestClient) -> None:
    asked = client.get("/admin/preview?site=demo&rule=ccpa&lang=en&gpc=1", headers=AUTH).text
    plain = client.get("/admin/preview?site=demo&rule=ccpa&lang=en", headers=AUTH).text
    assert "globalPrivacyControl',{value:true}" in _frames(asked)[0]
    assert "globalPrivacyControl" not in _frames(plain)[0]
    assert 'name="gpc" value="1" checked' in asked


def test_preview_shows_at_most_six_languages(client: TestClient) -> None:
    langs = "&".join(f"lang={x}" for x in ("en", "de", "fr", "es", "it", "nl", "ja", "ko"))
    page = client.get(f"/admin/preview?site=demo&region=FR&{langs}", headers=AUTH).text
    assert len(_frames(page)) == 6
    assert "showing the first 6 of 8 languages" in page


@contextmanager
def _served(settings: Settings) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread; yields its origin."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive(), "server did not start"
            assert time.monotonic() < deadline, "server did not start in time"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def _screenshot(page: Page, path: Path) -> Path:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


@pytest.mark.browser
def test_preview_in_chromium_runs_the_public_snippet(settings: Settings, tmp_path: Path) -> None:
    """The page needs the token; each frame loads consent.js without it and records nothing."""
    path = settings.locales_dir / "fr" / "LC_MESSAGES" / "demo.po"
    with path.open("rb") as fp:
        catalog = read_po(fp, locale="fr")
    catalog["Reject all"].string = ""
    with path.open("wb") as fp:
        write_po(fp, catalog)
    with _served(settings) as origin, sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 960, "height": 900})
            seen: list[tuple[str, str | None]] = []
            page.on("request", lambda r: seen.append((r.url, r.headers.get("authorization"))))
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text))
            # The token goes with the page request only, as a header extension would send it.
            page.route(
                "**/admin/preview**",
                lambda route: route.continue_(headers={**route.request.headers, **AUTH}),
            )
            page.goto(f"{origin}/admin/preview?site=demo&region=DE&lang=de&lang=fr")
            frames = [f for f in page.frames if f is not page.main_frame]
            assert len(frames) == 2
            titles = [f.locator("#cg-title").inner_text(timeout=10000) for f in frames]
            assert titles == [
                shipped("de", "We value your privacy"),
                shipped("fr", "We value your privacy"),
            ]
            # The preferences panel is a part the frame's CSP lets the snippet fetch.
            frames[0].locator('[data-cg-action="settings"]').click()
            frames[0].locator("[data-cg-layer=preferences]").wait_for(timeout=10000)
            frames[0].locator('[data-cg-action="close"]').first.click()
            fr = frames[1]
            assert fr.locator('[data-cg-action="reject_all"]').inner_text() == "Reject all"
            assert "not translated: reject_all" in page.locator("p.status.fb").inner_text()
            shots = [_screenshot(page, tmp_path / "preview-de-fr.png")]
            fr.locator('[data-cg-action="accept_all"]').click()
            page.wait_for_timeout(300)
            scripts = [(u, a) for u, a in seen if "/consent.js?" in u]
            assert len(scripts) == 2
            assert all(a is None for _, a in scripts)  # public: no token needed
            assert not [u for u, _ in seen if u.endswith("/consents")]  # the CSP held it back
            assert any("Content Security Policy" in m and "/consents" in m for m in console)
            # The rule selector: California's opt-out banner, in English and Spanish.
            page.goto(f"{origin}/admin/preview?site=demo&rule=ccpa&lang=en&lang=es")
            frames = [f for f in page.frames if f is not page.main_frame]
            links = [
                f.locator('[data-cg-action="do_not_sell"]').inner_text(timeout=10000)
                for f in frames
            ]
            do_not_sell = "Do Not Sell or Share My Personal Information"
            assert links == [do_not_sell, shipped("es", do_not_sell)]
            shots.append(_screenshot(page, tmp_path / "preview-us-ca-en-es.png"))
            if os.environ.get("UPDATE_SCREENSHOTS") == "1":  # regenerates the guide's pictures
                for shot in shots:
                    shutil.copy(shot, ROOT / "docs" / "screenshots" / shot.name)
        finally:
            browser.close()


def test_no_basic_auth_challenge_that_browsers_would_cache(tmp_path: Path) -> None:
    """CSRF threat: a Basic challenge made browsers remember the token and send it along
    with any cross-site request; admin is bearer-only and never asks for Basic."""
    import base64

    from gateway.app import create_app
    from tests.helpers import make_settings

    settings = make_settings(tmp_path, admin_token="s3cret-token-value")
    with TestClient(create_app(settings)) as c:
        refused = c.get("/admin/preview?site=demo")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        good = base64.b64encode(b"anyone:s3cret-token-value").decode()
        for header in (f"Basic {good}", "Digest x", "Bearer "):
            response = c.get("/admin/preview?site=demo", headers={"Authorization": header})
            assert response.status_code == 401
            assert "basic" not in response.headers["www-authenticate"].lower()


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://127.0.0.1:8000.evil.example", "Sec-Fetch-Site": "cross-site"},
    ],
    ids=["foreign origin", "null origin", "cross-site fetch", "same-site fetch", "suffix trick"],
)
def test_cross_site_admin_writes_are_refused_even_with_the_token(
    client: TestClient, headers: dict[str, str]
) -> None:
    """CSRF threat: a page on another site posting to /admin/v1/reload with credentials."""
    response = client.post(
        "/admin/v1/reload",
        headers={**AUTH, **headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 403
    assert response.json()["error"] == "cross_site_request"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Origin": "http://127.0.0.1:8000"}, {"Sec-Fetch-Site": "same-origin"}],
    ids=["no browser headers (curl)", "own origin", "same-origin fetch"],
)
def test_same_site_admin_writes_still_work(client: TestClient, headers: dict[str, str]) -> None:
    assert client.post("/admin/v1/reload", headers={**AUTH, **headers}).status_code == 200


def test_admin_writes_are_rate_limited_per_client(tmp_path: Path) -> None:
    """Abuse threat: a leaked or scripted token reloading (re-rendering every site) in a loop."""
    from gateway.app import create_app
    from tests.helpers import make_settings

    settings = make_settings(
        tmp_path, admin_token=TOKEN, client_writes_per_minute=1, client_write_burst=3
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as c:
        statuses = [c.post("/admin/v1/reload", headers=AUTH).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = c.post("/admin/v1/reload", headers=AUTH)
        assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        # The admin bucket is its own: the same client's consent writes are not affected,
        # and reading (the preview) is not limited.
        from tests.pg import consent_body

        bundle = c.app.state.gateway.catalog.get("demo")  # type: ignore[attr-defined]
        posted = c.post("/v1/sites/demo/consents", json=consent_body(bundle, "admin-ip"))
        assert posted.status_code == 201
        assert c.get("/admin/preview?site=demo", headers=AUTH).status_code == 200
