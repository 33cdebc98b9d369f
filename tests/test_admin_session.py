"""Admin sessions for browsers: the login page, the signed session cookie, its CSRF token on
every change, expiry and revocation by rotating the token; Bearer keeps working unchanged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.web import session_cookie
from tests.helpers import editable_settings

TOKEN = "admin-session-token-0123456789abcdef"
BASE = "http://127.0.0.1:8000"
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin", "Origin": BASE}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(editable_settings(tmp_path_factory.mktemp("session"), admin_token=TOKEN))
    with TestClient(app, base_url=BASE, follow_redirects=False) as c:
        yield c


def _login(client: TestClient, token: str = TOKEN, **extra: str) -> Any:
    client.cookies.clear()
    return client.post(
        "/admin/login", data={"token": token, **extra}, headers={"Sec-Fetch-Site": "same-origin"}
    )


def _csrf(client: TestClient) -> str:
    r = client.get("/admin/session")
    assert r.status_code == 200, r.text
    token: str = r.json()["csrf_token"]
    return token


def test_the_login_page_and_a_wrong_token(client: TestClient) -> None:
    page = client.get("/admin/login?next=/admin/dashboard%3Fsite%3Ddemo")
    assert page.status_code == 200 and "type=password" in page.text
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert 'value="/admin/dashboard?site=demo"' in page.text
    wrong = _login(client, TOKEN + "x")
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    assert client.get("/admin/v1/sites/demo/versions").status_code == 401


def test_a_session_opens_the_admin_pages_and_apis(client: TestClient) -> None:
    r = _login(client, next="/admin/dashboard?site=demo")
    assert r.status_code == 303 and r.headers["location"] == "/admin/dashboard?site=demo"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("cg_admin=v1.")  # plain http: no __Host- prefix, no Secure
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age=28800"):
        assert attribute.lower() in cookie.lower(), cookie
    assert "secure" not in cookie.lower()
    assert client.get("/admin/v1/sites/demo/versions").status_code == 200
    assert client.get("/admin/rights").status_code == 200
    # Bearer keeps working, and a wrong bearer is not rescued by the cookie.
    assert (
        client.get(
            "/admin/v1/sites/demo/versions", headers={"Authorization": f"Bearer {TOKEN}"}
        ).status_code
        == 200
    )
    assert (
        client.get(
            "/admin/v1/sites/demo/versions", headers={"Authorization": "Bearer nope"}
        ).status_code
        == 401
    )


def test_changes_made_with_the_cookie_need_the_csrf_token(client: TestClient) -> None:
    """Threat: cross-site request forgery riding on the browser's admin session."""
    _login(client)
    csrf = _csrf(client)
    r = client.post("/admin/v1/reload", headers=SAME_ORIGIN)
    assert r.status_code == 403 and r.json()["error"] == "csrf_token_required"
    r = client.post("/admin/v1/reload", headers={**SAME_ORIGIN, "X-CSRF-Token": _other(csrf)})
    assert r.status_code == 403
    cross = {"Sec-Fetch-Site": "same-site", "X-CSRF-Token": csrf}
    r = client.post("/admin/v1/reload", headers=cross)
    assert r.status_code == 403 and r.json()["error"] == "cross_site_request"
    r = client.post("/admin/v1/reload", headers={**SAME_ORIGIN, "X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    # Another session's token is worthless here.
    other = _csrf_of_new_session(client)
    assert (
        client.post("/admin/v1/reload", headers={**SAME_ORIGIN, "X-CSRF-Token": other}).status_code
        == 200
    )
    assert (
        client.post("/admin/v1/reload", headers={**SAME_ORIGIN, "X-CSRF-Token": csrf}).status_code
        == 403
    )


def _other(token: str) -> str:
    """The token with its last hex digit changed."""
    return token[:-1] + ("1" if token[-1] == "0" else "0")


def _csrf_of_new_session(client: TestClient) -> str:
    _login(client)
    return _csrf(client)


def test_login_from_another_site_is_refused(client: TestClient) -> None:
    """Threat: login CSRF (another site's page logging the browser into a session)."""
    client.cookies.clear()
    r = client.post("/admin/login", data={"token": TOKEN}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_next_never_leaves_the_admin_pages(client: TestClient) -> None:
    """Threat: an open redirect through the login form."""
    for target in ("https://evil.example/", "//evil.example/admin/", "/admin\\@evil", "/elsewhere"):
        r = _login(client, next=target)
        assert r.status_code == 303 and r.headers["location"] == "/admin/rights", target


def test_forged_expired_and_revoked_sessions_are_refused(tmp_path: Path) -> None:
    """Threat: a forged or stolen cookie; rotating the admin token ends every session."""
    now = time.time()
    genuine = session_cookie.new_session(TOKEN, 3600, now)
    assert session_cookie.session_nonce(TOKEN, genuine, now) is not None
    assert session_cookie.session_nonce("rotated-token", genuine, now) is None
    assert session_cookie.session_nonce(TOKEN, genuine, now + 3601) is None
    expires = genuine.split(".")[1]
    stretched = genuine.replace(f".{expires}.", f".{int(expires) + 9999}.")
    assert session_cookie.session_nonce(TOKEN, stretched, now) is None
    app = create_app(editable_settings(tmp_path, admin_token="rotated-token"))
    with TestClient(app, base_url=BASE) as c:
        c.cookies.set("cg_admin", genuine)
        assert c.get("/admin/v1/sites/demo/versions").status_code == 401


def test_https_uses_a_host_only_secure_cookie(tmp_path: Path) -> None:
    app = create_app(editable_settings(tmp_path, admin_token=TOKEN))
    with TestClient(app, base_url="https://127.0.0.1", follow_redirects=False) as c:
        r = c.post("/admin/login", data={"token": TOKEN}, headers={"Sec-Fetch-Site": "same-origin"})
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("__Host-cg_admin=v1.") and "secure" in cookie.lower()
        assert "domain" not in cookie.lower()
        assert c.get("/admin/v1/sites/demo/versions").status_code == 200
        c.cookies.set("cg_admin", c.cookies["__Host-cg_admin"])  # the http name is not read
        del c.cookies["__Host-cg_admin"]
        assert c.get("/admin/v1/sites/demo/versions").status_code == 401


def test_logout_needs_the_csrf_token_and_clears_the_cookie(client: TestClient) -> None:
    _login(client)
    csrf = _csrf(client)
    assert client.post("/admin/logout", data={"csrf": "x"}, headers=SAME_ORIGIN).status_code == 403
    r = client.post("/admin/logout", data={"csrf": csrf}, headers=SAME_ORIGIN)
    assert r.status_code == 303 and 'cg_admin=""' in r.headers["set-cookie"]


@pytest.fixture(scope="module")
def unlimited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app without write limits (they have a test of their own below)."""
    settings_ = editable_settings(
        tmp_path_factory.mktemp("unlimited"), admin_token=TOKEN, client_writes_per_minute=0
    )
    with TestClient(create_app(settings_), base_url=BASE, follow_redirects=False) as c:
        yield c


def test_login_attempts_are_rate_limited(tmp_path: Path) -> None:
    """Threat: guessing the admin token through the login form."""
    settings_ = editable_settings(tmp_path, admin_token=TOKEN, client_write_burst=3)
    with TestClient(create_app(settings_), base_url=BASE) as c:
        answers = [_login(c, f"guess-{n}").status_code for n in range(4)]
        assert answers == [401, 401, 401, 429]
        assert _login(c).status_code == 429  # the right token must wait too


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "text/plain", "", "multipart/form-data"]
    ),
)
def test_hostile_login_bodies_get_a_precise_answer(
    unlimited: TestClient, body: bytes, content_type: str
) -> None:
    """Threat: malformed, oversized or hostile login forms; never a 500, never a session."""
    client = unlimited
    client.cookies.clear()
    r = client.post(
        "/admin/login",
        content=body,
        headers={"Content-Type": content_type, "Sec-Fetch-Site": "same-origin"},
    )
    assert r.status_code in (400, 401, 413, 415), r.text
    assert "set-cookie" not in r.headers
    big = client.post(
        "/admin/login",
        content=b"token=" + b"a" * 5000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert big.status_code == 413
