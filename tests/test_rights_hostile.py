"""Hostile input on the rights endpoints: wrong, expired and reused codes, brute force,
enumeration, other subjects' receipts, forged links and callbacks. Never a leak, never a 500.
On the embedded store (the PostgreSQL paths are the same service code, see test_rights_flow)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli.main import main
from gateway.rights import credentials
from gateway.rights.limits import RightsLimits
from tests.rights_env import ADMIN, BASE, Env, env, hook, inbox  # noqa: F401


@pytest.fixture
def store_url() -> str:
    return ""


def _ask_email(env: Env, address: str) -> dict[str, Any]:  # noqa: F811
    r = env.ask({"type": "access", "identity": {"type": "email", "value": address}})
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def test_a_wrong_then_expired_code_closes_the_request(env: Env) -> None:  # noqa: F811
    made = _ask_email(env, "exp@example.com")
    code = env.inbox.code_for("exp@example.com")
    env.clock.offset = dt.timedelta(seconds=credentials.CODE_TTL + 1)
    r = env.verify(made["request_id"], made["token"], code)
    assert r.status_code == 410 and r.json()["error"] == "code_expired"
    r = env.verify(made["request_id"], made["token"], code)  # the right code, too late
    assert r.status_code == 409 and r.json()["error"] == "request_closed"
    detail = env.detail(made["request_id"])
    assert detail["state"] == "denied" and detail["reason"] == "the verification code expired"


def test_brute_force_of_codes_is_limited(env: Env) -> None:  # noqa: F811
    """Threat: guessing the 8-digit code. Five tries per request, then the request is closed."""
    made = _ask_email(env, "brute@example.com")
    code = env.inbox.code_for("brute@example.com")
    guesses = [f"{n:08d}" for n in range(10) if f"{n:08d}" != code][: credentials.MAX_ATTEMPTS]
    answers = [env.verify(made["request_id"], made["token"], g) for g in guesses]
    assert [a.status_code for a in answers] == [403, 403, 403, 403, 429]
    assert answers[-1].json()["error"] == "too_many_attempts"
    r = env.verify(made["request_id"], made["token"], code)
    assert r.status_code == 409 and r.json()["error"] == "request_closed"
    assert env.detail(made["request_id"])["state"] == "denied"


def test_requests_do_not_reveal_whether_an_identity_exists(env: Env) -> None:  # noqa: F811
    """Threat: enumeration of customers by e-mail. Known and unknown addresses get the same
    answer, without waiting for the mail relay (the same timing class), and a request's
    status says nothing until the code is given."""
    env.consent("known-1", "KnownBrowser")
    env.link(env.sid("known-1"), "email", "known@example.com")
    env.inbox.delay = 1.0  # a slow relay must not show in the answer's time
    answers = []
    for address in ("known@example.com", "stranger@example.com"):
        started = time.monotonic()
        answers.append(_ask_email(env, address))
        assert time.monotonic() - started < 0.8
    shape = [sorted(a) for a in answers]
    assert (
        shape[0] == shape[1] == ["due_at", "received_at", "request_id", "status", "token", "type"]
    )
    assert answers[0]["status"] == answers[1]["status"] == "verifying"
    for a in answers:
        seen = env.status(a["request_id"], a["token"]).json()
        assert sorted(seen) == ["due_at", "received_at", "request_id", "status", "type"]
    env.inbox.code_for("known@example.com")
    env.inbox.code_for("stranger@example.com")  # both get a code: nothing to tell apart


def test_code_mails_per_address_are_limited(env: Env) -> None:  # noqa: F811
    """Threat: mail-bombing someone through the request form. The fourth request for one
    address within the hour gets 429 with Retry-After before anything is stored or sent."""
    for _ in range(3):
        _ask_email(env, "victim@example.com")
    for _ in range(2):
        victim = {"type": "email", "value": "victim@example.com"}
        r = env.ask({"type": "access", "identity": victim})
        assert r.status_code == 429 and r.json()["error"] == "rate_limited", r.text
        assert 1 <= int(r.headers["retry-after"]) <= 1200  # one code every 20 minutes
    env.call(env.state.rights.drain)
    assert len(env.inbox.to("victim@example.com")) == 3
    assert len(env.call(env.state.rights.listing, "demo")) == 3


def test_code_mails_per_address_are_limited_across_nodes(env: Env) -> None:  # noqa: F811
    """Threat: mail-bombing through several gateway nodes, each with buckets of its own: the
    store's count of the address's requests within the hour still stops the fourth e-mail."""
    for _ in range(5):
        env.state.rights_limits = RightsLimits(env.settings)  # a node that saw none of them
        _ask_email(env, "victim@example.com")
    env.call(env.state.rights.drain)
    assert len(env.inbox.to("victim@example.com")) == 3


def test_tokens_and_ids_are_not_guessable_or_enumerable(env: Env) -> None:  # noqa: F811
    made = _ask_email(env, "tok@example.com")
    other = _ask_email(env, "tok2@example.com")
    unknown = {"error": "unknown_request", "detail": "no request with this id and token"}
    for request_id, token in [
        (made["request_id"], other["token"]),  # another request's token
        (made["request_id"], ""),
        (made["request_id"], made["token"][:-2]),
        (str(uuid.uuid4()), made["token"]),  # an id that does not exist
        ("not-a-uuid", made["token"]),
        ("x" * 5000, made["token"]),
    ]:
        r = env.status(request_id, token)
        assert r.status_code == 404 and r.json() == unknown, (request_id, r.text)
        v = env.verify(request_id, token, "12345678")
        assert v.status_code in (404, 413) and v.status_code != 500
    # The code mail of one request does not verify another.
    code = env.inbox.code_for("tok@example.com")
    r = env.verify(other["request_id"], other["token"], code)
    assert r.status_code == 403 or code == env.inbox.code_for("tok2@example.com")


def test_receipts_of_other_subjects_or_forged_ones_are_refused(env: Env) -> None:  # noqa: F811
    receipt = env.consent("alice", "AliceBrowser")
    for body in (
        {"type": "access", "receipt": receipt, "subject_id": "bob"},  # someone else's data
        {"type": "access", "receipt": receipt[:-3] + "AAA"},
        {"type": "access", "receipt": "v1.e30.AAAA"},
        {"type": "deletion", "receipt": "not-a-receipt"},
    ):
        r = env.ask(body)
        assert r.status_code == 403 and r.json()["error"] == "invalid_receipt", r.text
    r = env.ask({"type": "access"}, Authorization=f"Bearer {receipt[:-1]}x")
    assert r.status_code == 403
    assert env.call(env.state.rights.listing, "demo") == []  # nothing was even stored


def test_download_links_are_signed_expiring_and_per_request(env: Env) -> None:  # noqa: F811
    receipt = env.consent("dl-1", "DlBrowser")
    made = env.ask({"type": "access", "receipt": receipt}).json()
    url = made["download_url"].removeprefix("http://testserver")
    deletion = env.ask({"type": "deletion", "receipt": receipt}).json()
    path, _, query = url.partition("?")
    params = dict(p.split("=") for p in query.split("&"))
    forged = [
        f"{path}?expires={params['expires']}&signature={'0' * 64}",
        f"{path}?expires={int(params['expires']) + 3600}&signature={params['signature']}",
        f"{path.replace(made['request_id'], deletion['request_id'])}?{query}",
        f"{path}",
        f"{path}?expires=abc&signature=zz",
        f"{path.replace('/demo/', '/other/')}?{query}",
    ]
    for attempt in forged:
        r = env.client.get(attempt)
        assert r.status_code in (403, 404) and r.status_code != 500, (attempt, r.text)
        assert r.headers["content-type"] == "application/json"
    assert env.client.get(url).status_code == 200
    env.clock.offset = dt.timedelta(seconds=credentials.DOWNLOAD_TTL + 7200)
    r = env.client.get(url)
    assert r.status_code == 403 and r.json()["error"] == "invalid_link"


def test_downstream_callbacks_must_be_signed_fresh_and_known(env: Env) -> None:  # noqa: F811
    receipt = env.consent("cb-1", "CbBrowser")
    made = env.ask({"type": "access", "receipt": receipt}).json()
    rid = made["request_id"]
    refused = {"error": "unauthorized", "detail": "the signature does not verify"}
    for system, over in [
        ("crm", {"secret": "wrong-secret"}),
        ("crm", {"signature": "sha256=" + "0" * 64}),
        ("crm", {"timestamp": str(int(time.time()) - 3600)}),  # replayed later
        ("crm", {"timestamp": "yesterday"}),
        ("erp", {}),  # not a system of this site
    ]:
        r = env.confirm(rid, system, {"status": "done"}, **over)
        assert r.status_code == 401 and r.json() == refused, (system, over, r.text)
    r = env.confirm(str(uuid.uuid4()), "crm", {"status": "done"})
    assert r.status_code == 401 and r.json() == refused
    r = env.confirm("not-an-id", "crm", {"status": "done"})
    assert r.status_code == 401 and r.json() == refused
    # Header bytes that are not ASCII (latin-1 text to the server) are refused like the rest.
    for header, value in [
        ("X-Consent-Timestamp", "\u0661\u0662\u0663".encode()),  # Arabic-Indic digits
        ("X-Consent-Timestamp", b"17\xe9"),
        ("X-Consent-Signature", b"sha256=\xe9\xff"),
    ]:
        headers: dict[str, Any] = {
            "Content-Type": "application/json",
            "X-Consent-Timestamp": str(int(time.time())),
            "X-Consent-Signature": "sha256=" + "0" * 64,
            header: value,
        }
        r = env.client.post(
            f"/v1/rights-requests/{rid}/systems/crm", content=b'{"status":"done"}', headers=headers
        )
        assert r.status_code == 401 and r.json() == refused, (header, value, r.text)
    r = env.client.get(
        f"{BASE}/rights-requests/{rid}", headers={"Authorization": b"Bearer rrt_\xe9\xff"}
    )
    assert r.status_code == 404
    r = env.confirm(rid, "crm", {"status": "finished"})
    assert r.status_code == 400 and r.json()["field"] == "status"
    big = env.client.post(
        f"/v1/rights-requests/{rid}/systems/crm", content=b"x" * 20000,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert big.status_code == 413
    assert env.detail(rid)["state"] == "in_progress"
    # A genuine confirmation counts once; repeating it changes nothing.
    assert env.confirm(rid, "crm", {"status": "done"}).status_code == 200
    assert env.confirm(rid, "crm", {"status": "failed"}).status_code == 200
    detail = env.detail(rid)
    assert detail["state"] == "completed" and detail["systems"][0]["state"] == "done"


def test_request_types_follow_the_region_and_staff_use_api_keys(env: Env) -> None:  # noqa: F811
    env.consent("staff-1", "StaffBrowser")
    env.link(env.sid("staff-1"), "phone", "+49 30 1234567")
    # Australia's rule offers access and correction only.
    r = env.ask({"type": "deletion", "subject_id": env.sid("staff-1"), "region": "AU"}, **env.key)
    assert r.status_code == 422 and r.json()["error"] == "type_not_offered"
    # Staff verified the caller: a request by phone number, for a customer in Germany.
    r = env.ask(
        {"type": "access", "identity": {"type": "phone", "value": "+4930 1234567"},
         "region": "DE"},
        **env.key,
    )  # fmt: skip
    assert r.status_code == 202, r.text
    made = r.json()
    assert made["status"] == "in_progress"
    detail = env.detail(made["request_id"])
    assert detail["subject_ids"] == [env.sid("staff-1")] and detail["rule_id"] == "gdpr"
    assert detail["transitions"][0]["actor"].startswith("api_key:")
    received = dt.datetime.fromisoformat(made["received_at"])
    due = dt.datetime.fromisoformat(made["due_at"])
    assert 28 <= (due - received).days <= 31  # one calendar month
    # Extended once, with a reason, to three months from receipt.
    url = f"/admin/v1/sites/demo/rights-requests/{made['request_id']}"
    r = env.client.post(f"{url}/extend", json={}, headers=ADMIN)
    assert r.status_code == 409 and r.json()["error"] == "reason_required"
    r = env.client.post(f"{url}/extend", json={"reason": "many systems"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "extended"
    extended = dt.datetime.fromisoformat(r.json()["due_at"])
    assert 89 <= (extended - received).days <= 92
    r = env.client.post(f"{url}/extend", json={"reason": "again"}, headers=ADMIN)
    assert r.status_code == 409 and r.json()["error"] == "invalid_transition"
    # Without a receipt or key, only e-mail can be verified; nothing at all is refused.
    r = env.ask({"type": "access", "identity": {"type": "phone", "value": "+49301234567"}})
    assert r.status_code == 422 and r.json()["error"] == "unverifiable_identity"
    r = env.ask({"type": "access"})
    assert r.status_code == 401 and r.json()["error"] == "credential_required"
    r = env.ask(
        {"type": "access", "subject_id": env.sid("staff-1")}, Authorization="Bearer cgk_bad"
    )
    assert r.status_code == 401
    r = env.ask({"type": "access", "identity": {"type": "email", "value": "a@b.co"},
                 "region": "US-CA"})  # fmt: skip
    assert r.status_code == 400 and r.json()["field"] == "region"  # visitors cannot pick


def test_the_admin_queue_needs_the_admin_token(env: Env) -> None:  # noqa: F811
    receipt = env.consent("adm-1", "AdmBrowser")
    made = env.ask({"type": "access", "receipt": receipt}).json()
    url = f"/admin/v1/sites/demo/rights-requests/{made['request_id']}"
    for method, path in [
        ("GET", "/admin/v1/sites/demo/rights-requests"),
        ("GET", url),
        ("POST", f"{url}/deny"),
        ("GET", "/admin/rights"),
    ]:
        r = env.client.request(method, path, json={"reason": "x"},
                               headers={"Authorization": "Bearer wrong"})  # fmt: skip
        assert r.status_code == 401, path
    r = env.client.get("/admin/v1/sites/demo/rights-requests?state=bogus", headers=ADMIN)
    assert r.status_code == 400 and r.json()["field"] == "state"
    r = env.client.get("/admin/v1/sites/demo/rights-requests?limit=99999", headers=ADMIN)
    assert r.status_code == 400
    r = env.client.post(f"{url}/deny", json={"reason": ""}, headers=ADMIN)
    assert r.status_code == 409 and r.json()["error"] == "reason_required"
    r = env.client.post(f"{url}/extend", json={"reason": "x"}, headers=ADMIN)
    assert r.status_code == 409 and r.json()["error"] == "no_extension"  # default rule: none
    r = env.client.post(f"{url}/deny", json={"reason": "duplicate request"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "denied"
    seen = env.status(made["request_id"], made["token"]).json()
    assert seen["status"] == "denied" and seen["reason"] == "duplicate request"
    assert "download_url" not in seen
    r = env.client.get(made["download_url"].removeprefix("http://testserver"))
    assert r.status_code == 403  # a denied request's link stops working


def test_the_cli_lists_shows_and_closes_requests(env: Env, capsys: Any) -> None:  # noqa: F811
    receipt = env.consent("cli-1", "CliBrowser")
    made = env.ask({"type": "withdraw", "receipt": receipt}).json()
    flags = ["--data-dir", str(env.settings.data_dir), "--banners-dir",
             str(env.settings.banners_dir)]  # fmt: skip
    assert main(["rights", "list", "demo", *flags]) == 0
    out = capsys.readouterr().out
    assert made["request_id"] in out and "withdraw" in out and "in_progress" in out
    assert main(["rights", "show", made["request_id"], *flags]) == 0
    assert '"systems"' in capsys.readouterr().out
    assert main(["rights", "complete", made["request_id"], *flags]) == 1
    assert "crm" in capsys.readouterr().err  # the required CRM has not confirmed
    assert main(["rights", "deny", made["request_id"], "--reason", "fraud", *flags]) == 0
    assert "is denied" in capsys.readouterr().out
    # A reason may name the requester: the operator erases it; an unknown id erases nothing.
    assert main(["rights", "erase-reasons", made["request_id"], str(uuid.uuid4()), *flags]) == 1
    assert main(["rights", "show", made["request_id"], *flags]) == 0
    assert "fraud" in capsys.readouterr().out
    assert main(["rights", "erase-reasons", made["request_id"], *flags]) == 0
    assert "erased the reasons of" in capsys.readouterr().out
    assert main(["rights", "show", made["request_id"], *flags]) == 0
    assert "fraud" not in capsys.readouterr().out
    assert main(["audit", "verify", *flags]) == 0, capsys.readouterr().out  # chain intact
    assert main(["rights", "show", str(uuid.uuid4()), *flags]) == 1
    assert main(["rights", "list", "--type", "teleport", *flags]) == 1


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    body=st.one_of(
        st.dictionaries(
            st.sampled_from(["type", "subject_id", "identity", "details", "language", "receipt",
                             "region", "code", "extra"]),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=40),
                lambda inner: st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                max_leaves=8,
            ),
        ),
        st.lists(st.integers(), max_size=3),
        st.text(max_size=20),
    )
)  # fmt: skip
def test_hostile_request_bodies_get_a_precise_4xx(env: Env, body: Any) -> None:  # noqa: F811
    # Sixty bodies from one address: the per-client limit (tested on its own) stays out of it.
    env.state.rights_limits = RightsLimits(env.settings.replace(rights_client_per_hour=0))
    r = env.ask(body)
    assert r.status_code in (202, 400, 401, 403, 409, 413, 415, 422), (body, r.text)
    assert r.headers["content-type"] == "application/json"
    if r.status_code != 202:
        assert r.json()["error"]


def test_without_smtp_an_email_request_is_refused_before_it_is_stored(env: Env) -> None:  # noqa: F811
    env.state.settings = env.state.settings.replace(smtp_url="")
    r = env.ask({"type": "access", "identity": {"type": "email", "value": "nomail@example.com"}})
    assert r.status_code == 503 and r.json()["error"] == "email_verification_off"
    assert env.call(env.state.rights.listing, "demo") == []
