"""Rights requests end to end through the real app: a real SMTP server in-process (aiosmtpd),
the embedded store and PostgreSQL, signed downstream confirmations, an injected clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Iterator

import asyncpg
import jsonschema
import orjson
import pytest

from gateway.audit import service as audit_service
from gateway.core.settings import Settings
from gateway.rights import events
from gateway.sinks.sqlite import FILE_NAME
from tests.helpers import OPS
from tests.pg import scratch_database
from tests.rights_env import ADMIN, BASE, Env, delivered_events, env, hook, inbox  # noqa: F401


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""
        return
    loop = asyncio.new_event_loop()
    manager = scratch_database()
    try:
        name = loop.run_until_complete(manager.__aenter__())
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        loop.run_until_complete(manager.__aexit__(None, None, None))
        loop.close()


def test_an_anonymous_visitor_gets_their_data_with_a_receipt(env: Env) -> None:  # noqa: F811
    receipt = env.consent("anon-1", "Mozilla/5.0 AnonBrowser")
    env.consent("someone-else", "Mozilla/5.0 OtherBrowser")
    r = env.ask({"type": "access", "receipt": receipt})
    assert r.status_code == 202, r.text
    made = r.json()
    assert made["status"] == "in_progress"  # a receipt is verification enough
    assert made["due_at"] > made["received_at"]
    assert made["token"].startswith("rrt_")
    archive = env.download(made["download_url"])
    exported = orjson.loads(archive.read("subject.json"))
    assert [s["subject_id"] for s in exported["subjects"]] == [env.sid("anon-1")]
    assert exported["subjects"][0]["current"]["choices"]["marketing"] is True
    records = archive.read("records.csv").decode()
    assert "AnonBrowser" in records and "OtherBrowser" not in records
    version = exported["subjects"][0]["current"]["banner_version"]
    assert exported["texts"][version]["en"]["texts"]  # the exact texts of what was shown
    assert "texts" in archive.read("texts.csv").decode()
    # Open until the required CRM confirms; the optional newsletter system never has to.
    assert env.status(made["request_id"], made["token"]).json()["status"] == "in_progress"
    assert env.confirm(made["request_id"], "crm", {"status": "done"}).status_code == 200
    final = env.status(made["request_id"], made["token"]).json()
    assert final["status"] == "completed"
    assert "download_url" in final
    detail = env.detail(made["request_id"])
    assert [(t["from"], t["to"], t["actor"]) for t in detail["transitions"]] == [
        (None, "received", "subject"),
        ("received", "in_progress", "subject"),
        ("in_progress", "completed", "system"),
    ]
    pending = env.call(env.state.rights.store.pending_events, 100)
    kinds_seen = [e.type for e in pending]
    assert kinds_seen[0] == events.CREATED and kinds_seen[-1] == events.COMPLETED
    for e in pending:
        jsonschema.validate(e.body, events.EVENT_SCHEMA)


def test_an_identified_customer_verifies_by_email_code(env: Env) -> None:  # noqa: F811
    env.consent("ann-phone", "AnnPhone/1.0")
    env.consent("ann-laptop", "AnnLaptop/2.0")
    env.link(env.sid("ann-phone"), "email", "ann@example.com")
    env.link(env.sid("ann-laptop"), "email", "ann@example.com")
    r = env.ask({"type": "portability", "identity": {"type": "email", "value": " Ann@Example.COM"}})
    assert r.status_code == 202, r.text
    made = r.json()
    assert made["status"] == "verifying" and "download_url" not in made
    code = env.inbox.code_for("ann@example.com")
    message = env.inbox.messages[-1]
    assert message["From"] == "privacy@demo.example"
    wrong = "0" * 8 if code != "0" * 8 else "1" * 8
    r = env.verify(made["request_id"], made["token"], wrong)
    assert r.status_code == 403 and r.json()["error"] == "invalid_code"
    assert "4 attempt(s) left" in r.json()["detail"]
    r = env.verify(made["request_id"], made["token"], code)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "in_progress"
    archive = env.download(r.json()["download_url"])
    exported = orjson.loads(archive.read("subject.json"))
    expected = sorted([env.sid("ann-laptop"), env.sid("ann-phone")])
    assert sorted(s["subject_id"] for s in exported["subjects"]) == expected
    assert all(s["identities"] == ["email"] for s in exported["subjects"])
    assert "ann@example.com" not in archive.read("subject.json").decode()  # only hashed, never kept
    # The code works once.
    again = env.verify(made["request_id"], made["token"], code)
    assert again.status_code == 409 and again.json()["error"] == "already_verified"


def _sqlite_bytes(settings: Settings) -> bytes:
    data = b""
    for path in settings.data_dir.glob(FILE_NAME + "*"):
        data += path.read_bytes()
    return data


def test_a_deletion_leaves_no_identity_user_agent_or_ip_and_the_history_verifies(
    env: Env,  # noqa: F811
    store_url: str,
) -> None:
    receipt = env.consent("del-1", "DeleteMeBrowser/9.9")
    gone, kept_id = env.sid("del-1"), env.sid("keep-1")  # derived hex ids, safe in SQL text
    env.consent("keep-1", "KeepMeBrowser/1.0")
    env.link(env.sid("del-1"), "email", "del@example.com")
    env.link(env.sid("keep-1"), "email", "keep@example.com")
    r = env.ask({"type": "deletion", "receipt": receipt, "subject_id": env.sid("del-1")})
    assert r.status_code == 202, r.text
    made = r.json()
    env.tick()
    detail = env.detail(made["request_id"])
    assert detail["result"]["erased_records"] == 1
    assert detail["result"]["erased_identity_links"] == 1
    assert detail["state"] == "in_progress"  # the CRM has not confirmed yet
    assert env.confirm(made["request_id"], "crm", {"status": "done"}).status_code == 200
    assert env.detail(made["request_id"])["state"] == "completed"

    history = env.call(env.state.recording.history, "demo", env.sid("del-1"))["history"]
    (record,) = history
    assert record["user_agent"] == "" and record["ip_truncated"] is None
    assert record["page_url"] == "" and record["choices"]["marketing"] is True  # what, when kept
    kept = env.call(env.state.recording.history, "demo", env.sid("keep-1"))["history"][0]
    assert kept["user_agent"] == "KeepMeBrowser/1.0" and kept["ip_truncated"] == "127.0.0.0/24"
    assert (
        env.client.get(f"{BASE}/subjects/{env.sid('del-1')}", headers=env.key).json()["identities"]
        == []
    )
    # The consent history still verifies: the subject's receipt signs the original content,
    # whose hash the tombstone keeps beside the erased record.
    claims = env.state.recording.receipts.verify(receipt)
    tombs = env.call(env.state.rights.store.tombstones, "demo", env.sid("del-1"))
    assert [(t["record_id"], t["content_hash"]) for t in tombs] == [
        (claims.record_id, claims.content_hash)
    ]
    assert tombs[0]["erased_fields"] == [
        "idempotency_key",
        "ip_truncated",
        "page_url",
        "user_agent",
    ]
    # ... and `audit verify` still verifies the whole chain, the erased record included.
    report = env.call(audit_service.verify, env.settings)
    assert report.ok and report.checked >= 2, report.as_json()
    if not store_url:
        raw = _sqlite_bytes(env.settings)
        assert b"DeleteMeBrowser" not in raw  # not even in free pages or the WAL
        assert b"KeepMeBrowser" in raw
        conn = sqlite3.connect(env.settings.data_dir / FILE_NAME)
        try:
            links = conn.execute(
                f"SELECT count(*) FROM identity_links WHERE subject_id = '{gone}'"
            ).fetchone()
            assert links == (0,)
        finally:
            conn.close()
    else:

        async def check() -> None:
            conn = await asyncpg.connect(store_url)
            try:
                assert (
                    await conn.fetchval(
                        f"SELECT count(*) FROM identity_links WHERE subject_id = '{gone}'"
                    )
                    == 0
                )
                assert (
                    await conn.fetchval(
                        f"SELECT count(*) FROM consent_records WHERE subject_id = '{gone}' AND "
                        "(ip_truncated IS NOT NULL OR user_agent <> '' OR page_url <> '')"
                    )
                    == 0
                )
                assert (
                    await conn.fetchval(
                        "SELECT count(*) FROM consent_records WHERE user_agent LIKE 'DeleteMe%'"
                    )
                    == 0
                )
                assert (
                    await conn.fetchval(
                        f"SELECT count(*) FROM identity_links WHERE subject_id = '{kept_id}'"
                    )
                    == 1
                )
            finally:
                await conn.close()

        asyncio.run(check())


def test_a_late_system_keeps_the_request_open_and_overdue(env: Env) -> None:  # noqa: F811
    receipt = env.consent("late-1", "LateBrowser")
    made = env.ask({"type": "access", "receipt": receipt}).json()
    request_id = made["request_id"]
    # The region is unknown (a loopback client): the fail-closed rule, 30 days.
    due = dt.datetime.fromisoformat(made["due_at"])
    received = dt.datetime.fromisoformat(made["received_at"])
    assert due - received == dt.timedelta(days=30)
    env.clock.offset = dt.timedelta(days=3)
    env.tick()
    detail = env.detail(request_id)
    assert detail["systems"][0]["system"] == "crm" and detail["systems"][0]["reminders"] == 1
    assert not detail["overdue"]
    overdue = env.client.get("/admin/v1/sites/demo/rights-requests?overdue=1", headers=ADMIN)
    assert overdue.json()["requests"] == []

    env.clock.offset = dt.timedelta(days=31)
    env.tick()
    listed = env.client.get("/admin/v1/sites/demo/rights-requests?overdue=1", headers=ADMIN)
    assert [r["request_id"] for r in listed.json()["requests"]] == [request_id]
    assert listed.json()["requests"][0]["overdue"] is True
    metrics = env.client.get("/metrics", headers=OPS).text
    assert 'gateway_rights_requests_overdue{site="demo"} 1.0' in metrics
    assert 'gateway_rights_system_reminders_total{kind="escalation",site="demo",system="crm"}' in (
        metrics
    )
    page = env.client.get("/admin/rights?site=demo&overdue=1", headers=ADMIN)
    assert page.status_code == 200 and request_id in page.text and "overdue" in page.text
    # Completing by hand is refused while the required CRM is silent.
    r = env.client.post(
        f"/admin/v1/sites/demo/rights-requests/{request_id}/complete", json={}, headers=ADMIN
    )
    assert r.status_code == 409 and r.json()["error"] == "systems_pending"
    # The late confirmation closes it; it is no longer overdue.
    assert env.confirm(request_id, "crm", {"status": "done", "note": "late"}).status_code == 200
    assert env.detail(request_id)["state"] == "completed"
    listed = env.client.get("/admin/v1/sites/demo/rights-requests?overdue=1", headers=ADMIN)
    assert listed.json()["requests"] == []
    assert (
        'gateway_rights_requests_overdue{site="demo"} 0.0'
        in env.client.get("/metrics", headers=OPS).text
    )
    env.tick()
    kinds_seen = [
        (e["type"], e.get("change"), e.get("system")) for e in delivered_events(env.hooked)
    ]
    assert kinds_seen[0] == (events.CREATED, None, None)
    assert (events.UPDATED, "reminder", "crm") in kinds_seen
    assert (events.UPDATED, "escalation", "crm") in kinds_seen
    assert kinds_seen[-1] == (events.COMPLETED, None, None)
    assert env.call(env.state.rights.store.pending_events, 100) == []


def test_opt_out_of_sale_and_withdrawal_are_recorded_for_the_subject(env: Env) -> None:  # noqa: F811
    receipt = env.consent("sale-1", "SaleBrowser")
    made = env.ask({"type": "opt_out_sale", "receipt": receipt}).json()
    assert made["status"] == "in_progress"
    deadline = dt.datetime.now() + dt.timedelta(seconds=10)
    while (
        len(history := env.call(env.state.recording.history, "demo", env.sid("sale-1"))["history"])
        < 2
    ):
        assert dt.datetime.now() < deadline, "the opt-out record did not arrive"
        env.tick()
    opted = history[0]
    assert opted["action"] == "custom" and opted["channel"] == "api"
    assert opted["choices"]["marketing"] is False  # the sale-or-share purpose
    assert opted["choices"]["analytics"] is True  # the other choices stay as they were
    assert opted["user_agent"] == "" and opted["ip_truncated"] is None
    assert env.detail(made["request_id"])["result"] == {"recorded": [opted["record_id"]]}
    # Staff take a withdrawal of every consent by phone for the same customer.
    env.link(env.sid("sale-1"), "phone", "+44 20 7946 0958")
    r = env.ask(
        {"type": "withdraw", "identity": {"type": "phone", "value": "+442079460958"}}, **env.key
    )
    assert r.status_code == 202, r.text
    while (
        len(history := env.call(env.state.recording.history, "demo", env.sid("sale-1"))["history"])
        < 3
    ):
        assert dt.datetime.now() < deadline, "the withdrawal record did not arrive"
        env.tick()
    assert history[0]["action"] == "withdraw"
    assert not any(v for k, v in history[0]["choices"].items() if k != "necessary")
