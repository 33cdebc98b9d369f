"""The rights queue page acts, not just lists (issue 13 item 6): in an admin browser session
each open request has complete / deny / extend buttons, which post a form carrying the
session's CSRF token. Threats: a cross-site page posting the form with the cookie (CSRF), a
form without the token, a Bearer-only client (no session, so no buttons and no form route)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.rights_env import ADMIN, Env, env, hook, inbox  # noqa: F401

SAME_SITE = {"Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def store_url() -> str:
    return ""  # the embedded store: the page and its forms, not the stores, are under test


def _session(client: TestClient) -> str:
    r = client.post("/admin/login", data={"token": "admin-token"}, headers=SAME_SITE,
                    follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    csrf: str = client.get("/admin/session").json()["csrf_token"]
    return csrf


def _open_request(env: Env, name: str) -> str:  # noqa: F811
    receipt = env.consent(name, "QueueBrowser")
    request_id: str = env.ask({"type": "access", "receipt": receipt}).json()["request_id"]
    return request_id


def test_the_queue_page_acts_with_the_sessions_form(env: Env) -> None:  # noqa: F811
    first, second = _open_request(env, "queue-1"), _open_request(env, "queue-2")
    client = env.client
    # Bearer only (the API, the CLI): the page lists, but has no buttons to post.
    bearer_page = client.get("/admin/rights?site=demo", headers=ADMIN).text
    assert first in bearer_page and "name=csrf" not in bearer_page

    csrf = _session(client)
    page = client.get("/admin/rights?site=demo").text
    action = f"/admin/rights/demo/{first}/deny"
    assert f'action="{action}"' in page and f'value="{csrf}"' in page

    form = {"csrf": csrf, "reason": "not the requester"}
    # Another site's page posting the same form with the cookie: refused.
    r = client.post(action, data=form, headers={"Sec-Fetch-Site": "cross-site"})
    assert (r.status_code, r.json()["error"]) == (403, "cross_site_request")
    # The form without the session's token: refused.
    r = client.post(action, data={"reason": "x"}, headers=SAME_SITE)
    assert (r.status_code, r.json()["error"]) == (403, "csrf_token_required")
    r = client.post(action, data={**form, "csrf": "0" * len(csrf)}, headers=SAME_SITE)
    assert r.status_code == 403
    assert env.detail(first)["state"] != "denied"

    r = client.post(action, data=form, headers=SAME_SITE, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/admin/rights?site=demo"
    assert env.detail(first)["state"] == "denied"

    # What the request's rule refuses is answered precisely, and changes nothing (the
    # loopback client's fail-closed rule allows no extension).
    r = client.post(f"/admin/rights/demo/{second}/extend",
                    data={"csrf": csrf, "reason": "more time"}, headers=SAME_SITE)  # fmt: skip
    assert (r.status_code, r.json()["error"]) == (409, "no_extension")
    assert env.detail(second)["state"] != "extended"
    page = client.get("/admin/rights?site=demo").text
    assert f"/admin/rights/demo/{first}/" not in page  # a closed request has no buttons
    assert f"/admin/rights/demo/{second}/complete" in page  # an open one still has

    # Unknown actions and requests answer precisely, never a 500.
    r = client.post(f"/admin/rights/demo/{first}/erase", data=form, headers=SAME_SITE)
    assert r.status_code == 404
    r = client.post("/admin/rights/demo/no-such-request/deny", data=form, headers=SAME_SITE)
    assert r.status_code == 404
    r = client.post(action, content=b"reason=x", headers={**SAME_SITE,
                    "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 415


def test_without_a_session_the_form_route_is_refused(env: Env) -> None:  # noqa: F811
    request_id = _open_request(env, "queue-3")
    env.client.cookies.clear()
    r = env.client.post(f"/admin/rights/demo/{request_id}/deny", data={"reason": "x"},
                        headers={**SAME_SITE, **ADMIN})  # fmt: skip
    assert r.status_code == 401
    assert env.detail(request_id)["state"] != "denied"
