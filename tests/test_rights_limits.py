"""The rights endpoints' write limits (429 + Retry-After), their CORS, and the one-time-code
e-mail in the request's locale, through the real app with a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po

from gateway.core.i18n import bcp47
from gateway.core.ratelimit import RateLimited
from gateway.rights.limits import RightsLimits
from gateway.sites.texts import EMAIL_TEXTS
from tests.helpers import ROOT, editable_settings
from tests.rights_env import BASE, Env, env, hook, inbox, plain_text  # noqa: F401

ORIGIN = "http://127.0.0.1:8000"  # one of the demo site's allowed_origins
DEMO_LOCALES = ["en", "de", "fr", "es", "it", "nl", "pt_BR", "zh_Hans", "zh_Hant", "ja", "ko", "ar"]


@pytest.fixture
def store_url() -> str:
    return ""


def _limits(env: Env, **changes: int) -> None:  # noqa: F811
    env.state.rights_limits = RightsLimits(env.settings.replace(**changes))


def _email(address: str, **extra: Any) -> dict[str, Any]:
    return {"type": "access", "identity": {"type": "email", "value": address}, **extra}


def _refused(r: Any, detail: str) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"] == "rate_limited" and detail in r.json()["detail"]
    assert int(r.headers["retry-after"]) >= 1


def test_gcra_hourly_buckets_refill_and_keep_clients_apart(tmp_path: Path) -> None:
    """N per hour: N at once, then one every 60/N minutes; another address is not affected."""
    now = [0.0]
    limits = RightsLimits(
        editable_settings(tmp_path, rights_client_per_hour=3), clock=lambda: now[0]
    )
    for _ in range(3):
        limits.client("198.51.100.7")
    with pytest.raises(RateLimited) as refused:
        limits.client("198.51.100.7")
    assert refused.value.retry_after == 1200
    limits.client("198.51.100.8")
    limits.client("2001:db8::1")
    for _ in range(2):
        limits.client("2001:db8::ffff")
    with pytest.raises(RateLimited):  # the same /64: its fourth request
        limits.client("2001:db8::abcd")
    now[0] = 1200.0
    limits.client("198.51.100.7")


def test_requests_per_client_address_are_limited(env: Env) -> None:  # noqa: F811
    """Threat: one address filing request after request (storage, mail, staff time)."""
    _limits(env, rights_client_per_hour=4, rights_subject_per_hour=0)
    for n in range(4):
        assert env.ask(_email(f"c{n}@example.com")).status_code == 202
    _refused(env.ask(_email("c9@example.com")), "from this address")
    # Even a malformed body counts: the check comes before anything is read.
    _refused(env.ask({"type": "teleport"}), "from this address")
    # Staff requests (a site API key) are not counted against the address.
    r = env.ask({"type": "access", "subject_id": env.sid("staff-1")}, **env.key)
    assert r.status_code == 202, r.text
    assert len(env.call(env.state.rights.listing, "demo")) == 5


def test_code_guesses_count_against_the_address(env: Env) -> None:  # noqa: F811
    """Threat: spreading code guesses over many requests from one address."""
    _limits(env, rights_client_per_hour=3)
    made = env.ask(_email("g@example.com")).json()
    for guess in ("00000000", "00000001"):
        assert env.verify(made["request_id"], made["token"], guess).status_code == 403
    _refused(env.verify(made["request_id"], made["token"], "00000002"), "from this address")


def test_requests_per_subject_are_limited(env: Env) -> None:  # noqa: F811
    """Threat: a flood of requests about one person (one receipt, or staff in a loop)."""
    receipt = env.consent("limited-1", "LimitBrowser")
    for _ in range(5):
        assert env.ask({"type": "access", "receipt": receipt}).status_code == 202
    _refused(env.ask({"type": "access", "receipt": receipt}), "for this person")
    subject = {"type": "access", "subject_id": env.sid("limited-1")}
    _refused(env.ask(subject, **env.key), "for this person")  # staff share the person's limit


def test_code_mails_per_client_are_limited(env: Env) -> None:  # noqa: F811
    """Threat: one address using the gateway to send codes to many inboxes."""
    for n in range(10):
        assert env.ask(_email(f"spam{n}@example.com")).status_code == 202
    _refused(env.ask(_email("spam10@example.com")), "codes asked for from here")
    env.call(env.state.rights.drain)
    assert len(env.inbox.messages) == 10
    assert env.inbox.to("spam10@example.com") == []


def _site_name(env: Env) -> str:  # noqa: F811
    return str(env.state.gateway.catalog.get("demo").site.name)


def _translated(locale: str) -> dict[str, str]:
    if locale == "en":
        return dict(EMAIL_TEXTS)
    path = ROOT / "locales" / locale / "LC_MESSAGES" / "demo.po"
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=locale)
    found = {key: catalog.get(msgid) for key, msgid in EMAIL_TEXTS.items()}
    assert all(m is not None and m.string for m in found.values()), locale
    return {key: str(m.string) for key, m in found.items() if m is not None}


@pytest.mark.parametrize("locale", DEMO_LOCALES)
def test_the_code_email_is_in_the_request_locale(env: Env, locale: str) -> None:  # noqa: F811
    address = f"lang-{locale.lower()}@example.com"
    r = env.ask(_email(address, language=bcp47(locale)))
    assert r.status_code == 202, r.text
    env.call(env.state.rights.drain)
    (message,) = env.inbox.to(address)
    texts = _translated(locale)
    text = plain_text(message)
    found = re.search(r"\d{8}", text)
    assert found, text
    code = found.group(0)
    values = {"site": _site_name(env), "code": code, "minutes": 15}
    assert message["Subject"] == texts["email_subject"] % values
    assert texts["email_intro"] % values in text.replace("\n", " ")
    assert texts["email_code"] % values in text
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    page = str(html_part.get_content())
    assert f'lang="{bcp47(locale)}"' in page and code in page
    assert ('dir="rtl"' in page) == (locale == "ar")
    assert message["Content-Language"] == bcp47(locale)


def test_the_code_email_follows_accept_language(env: Env) -> None:  # noqa: F811
    r = env.ask(_email("al@example.com"), **{"Accept-Language": "fr-CA, en;q=0.5"})
    assert r.status_code == 202, r.text
    env.call(env.state.rights.drain)
    (message,) = env.inbox.to("al@example.com")
    assert message["Subject"].startswith(f"{_site_name(env)} : votre code de vérification ")


def test_cors_on_the_public_rights_endpoints(env: Env) -> None:  # noqa: F811
    """Allowed origins as for the recording API, on answers and errors alike; never
    credentials; any other origin is refused before anything is stored."""
    made = env.ask(_email("cors@example.com"), Origin=ORIGIN)
    assert made.status_code == 202, made.text
    assert made.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in made.headers
    body = made.json()
    auth = {"Authorization": f"Bearer {body['token']}", "Origin": ORIGIN}
    r = env.client.get(f"{BASE}/rights-requests/{body['request_id']}", headers=auth)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    r = env.client.post(
        f"{BASE}/rights-requests/{body['request_id']}/verify", json={"code": "1"}, headers=auth
    )
    assert r.status_code == 403 and r.headers["access-control-allow-origin"] == ORIGIN
    evil = env.ask(_email("cors2@example.com"), Origin="https://evil.example")
    assert evil.status_code == 403 and evil.json()["error"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in evil.headers
    assert len(env.call(env.state.rights.listing, "demo")) == 1
    pre = env.client.options(
        f"{BASE}/rights-requests",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert "Authorization" in pre.headers["access-control-allow-headers"]
    assert "access-control-allow-credentials" not in pre.headers
    _limits(env, rights_client_per_hour=1)
    env.ask(_email("cors3@example.com"), Origin=ORIGIN)
    limited = env.ask(_email("cors4@example.com"), Origin=ORIGIN)
    assert limited.status_code == 429 and limited.headers["access-control-allow-origin"] == ORIGIN
