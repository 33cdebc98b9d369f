"""A retry another node took first is answered from the central store, not recorded twice.

Threats: a visitor whose answer was lost retries on another node behind the load balancer and
the choice is recorded twice (two records, two receipts, reports counting it twice); a retry
with another choice under the same key is silently taken; a client marking every POST as a
retry loads the central store without bound, or a store that hangs holds every retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from gateway.core.settings import Settings
from gateway.recording import store_retries
from gateway.recording.fields import rfc3339_utc
from gateway.recording.store_retries import StoreRetries
from gateway.sinks.base import Store
from gateway.sinks.postgres import PostgresStore
from gateway.sinks.sqlite import SqliteStore
from gateway.sites.catalog import load_site
from tests.helpers import shipped_rules
from tests.pg import (  # noqa: F401
    ROOT,
    consent_body,
    drained,
    dsn_for,
    make_record,
    pg_dsn,
    recording_app,
    scratch_database,
)

BUNDLE = load_site(ROOT / "banners" / "demo", ROOT / "locales", shipped_rules())
CONSENTS = "/v1/sites/demo/consents"
PREFERENCES = "/v1/sites/demo/preferences"
ORIGIN = {"Origin": "http://127.0.0.1:8000"}
PEER = ("127.0.0.1", 50000)
DAY_NS = 86_400 * 10**9


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each central store, opened on a scratch file or database."""
    async with contextlib.AsyncExitStack() as stack:
        opened: Store
        if request.param == "postgres":
            name = await stack.enter_async_context(scratch_database())
            opened = PostgresStore(dsn_for(name), pool_size=2)
        else:
            opened = SqliteStore(tmp_path / "store.sqlite3")
        await opened.open()
        stack.push_async_callback(opened.close)
        yield opened


async def test_the_store_finds_the_subjects_first_record_with_the_key_within_the_period(
    store: Store,
) -> None:
    now = time.time_ns()
    old = make_record("ann", key="k-1", recorded_at=rfc3339_utc(now - 2 * DAY_NS))
    first = make_record("ann", key="k-1", recorded_at=rfc3339_utc(now - 1000))
    later = make_record("ann", key="k-1", recorded_at=rfc3339_utc(now))
    other = make_record("bob", key="k-2", recorded_at=rfc3339_utc(now))
    await store.write_batch([old, later, first, other])
    since = rfc3339_utc(now - DAY_NS)
    found = await store.keyed_record("consent", "demo", "ann", "k-1", since)
    assert found == first.as_json()  # the first within the day, as stored
    # Only the subject's own records, only that key, only that kind, only that site.
    assert await store.keyed_record("consent", "demo", "ann", "k-2", since) is None
    assert await store.keyed_record("consent", "demo", "bob", "k-1", since) is None
    assert await store.keyed_record("consent", "other", "ann", "k-1", since) is None
    assert await store.keyed_record("preference", "demo", "ann", "k-1", since) is None
    old_since = rfc3339_utc(now - 3 * DAY_NS)
    assert await store.keyed_record("consent", "demo", "ann", "k-1", old_since) == old.as_json()


@pytest.fixture
def two_nodes(tmp_path: Path, pg_dsn: str) -> Iterator[tuple[TestClient, TestClient]]:  # noqa: F811
    """Two gateway nodes (own data dirs and node ids) on one PostgreSQL store; the receipt
    and subject keys come from the store, so they are the same on both."""
    with ExitStack() as stack:
        nodes = []
        for name in ("node-a", "node-b"):
            settings = Settings(data_dir=tmp_path / name, durability="process", node_id=name,
                                store_url=pg_dsn, forward_linger=0.0)  # fmt: skip
            client = TestClient(recording_app(settings), client=PEER)
            nodes.append(stack.enter_context(client))
        yield nodes[0], nodes[1]


def _lookups(client: TestClient, outcome: str) -> float:
    retries = client.app.state.recording.appends.stored  # type: ignore[attr-defined]
    value: float = retries.m_lookups.labels(outcome)._value.get()
    return value


def _stored(dsn: str, table: str, key: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            found: int = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE idempotency_key = $1", key
            )
            return found
        finally:
            await conn.close()

    return asyncio.run(count())


@pytest.mark.postgres
def test_a_retry_on_another_node_is_answered_with_the_first_nodes_record(
    two_nodes: tuple[TestClient, TestClient],
    pg_dsn: str,  # noqa: F811
) -> None:
    a, b = two_nodes
    body = consent_body(BUNDLE, "ann", idempotency_key="lost-answer-1")
    first = a.post(CONSENTS, json=body, headers=ORIGIN)
    assert first.status_code == 201, first.text
    drained(a)  # node A's forwarder delivered the record to the store
    # The answer was lost; the snippet's retry, counted, lands on node B.
    again = b.post(CONSENTS, json={**body, "attempt": 2}, headers=ORIGIN)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()  # the same record, time, subject and receipt
    # Another choice under the same key: refused, never a second record.
    changed = consent_body(BUNDLE, "ann", "reject_all", idempotency_key="lost-answer-1")
    refused = b.post(CONSENTS, json={**changed, "attempt": 2}, headers=ORIGIN)
    assert (refused.status_code, refused.json()["error"]) == (409, "idempotency_key_reused")
    # A retry of a key no node recorded is recorded (the store is asked, and has nothing).
    fresh = b.post(
        CONSENTS,
        json=consent_body(BUNDLE, "ann", idempotency_key="never-seen", attempt=3),
        headers=ORIGIN,
    )
    assert fresh.status_code == 201 and "idempotent-replayed" not in fresh.headers
    drained(b)
    assert _stored(pg_dsn, "consent_records", "lost-answer-1") == 1
    assert _stored(pg_dsn, "consent_records", "never-seen") == 1
    assert (_lookups(b, "found"), _lookups(b, "missing")) == (2, 1)
    # The replayed receipt reads the subject's history, which holds the one record.
    history = b.get(
        f"/v1/sites/demo/subjects/{first.json()['subject_id']}/consents",
        headers={"Authorization": f"Bearer {again.json()['receipt']}"},
    )
    assert history.status_code == 200
    keyed = [h for h in history.json()["history"] if h["record_id"] == first.json()["record_id"]]
    assert len(keyed) == 1


@pytest.mark.postgres
def test_a_counted_retry_never_answers_with_another_subjects_record(
    two_nodes: tuple[TestClient, TestClient],
    pg_dsn: str,  # noqa: F811
) -> None:
    """Threat: Mallory sends Alice's idempotency key (seen in a log, say) marked as a retry
    to another node, to be answered with Alice's record and a receipt that reads her
    history. The store is asked for Mallory's own subject only: she gets a record of her own."""
    a, b = two_nodes
    alice = a.post(CONSENTS, json=consent_body(BUNDLE, "alice", idempotency_key="shared-9"),
                   headers=ORIGIN)  # fmt: skip
    assert alice.status_code == 201
    drained(a)
    mallory = b.post(
        CONSENTS,
        json=consent_body(BUNDLE, "mallory", idempotency_key="shared-9", attempt=2),
        headers=ORIGIN,
    )
    assert mallory.status_code == 201 and "idempotent-replayed" not in mallory.headers
    assert mallory.json()["record_id"] != alice.json()["record_id"]
    assert mallory.json()["subject_id"] != alice.json()["subject_id"]
    assert _lookups(b, "missing") == 1
    drained(b)
    assert _stored(pg_dsn, "consent_records", "shared-9") == 2


@pytest.mark.postgres
def test_a_preference_retry_on_another_node_is_answered_from_the_store(
    two_nodes: tuple[TestClient, TestClient],
    pg_dsn: str,  # noqa: F811
) -> None:
    a, b = two_nodes
    body: dict[str, Any] = {
        "subject_secret": consent_body(BUNDLE, "pat")["subject_secret"],
        "preferences": {"channels": {"email": True}, "topics": {"offers": {"enabled": True}}},
        "idempotency_key": "pref-lost-1",
    }
    first = a.post(PREFERENCES, json=body, headers=ORIGIN)
    assert first.status_code == 201, first.text
    drained(a)
    again = b.post(PREFERENCES, json={**body, "attempt": 2}, headers=ORIGIN)
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    drained(b)
    assert _stored(pg_dsn, "preference_records", "pref-lost-1") == 1


def test_a_first_send_never_waits_for_the_store(tmp_path: Path) -> None:
    """Only a body that says it is a retry is looked for: first sends (every choice a visitor
    makes) cost the store nothing."""
    settings = Settings(data_dir=tmp_path / "data", durability="process")
    with TestClient(recording_app(settings), client=PEER) as client:
        for i in range(3):
            body = consent_body(BUNDLE, f"v{i}", idempotency_key=f"k-{i}")
            assert client.post(CONSENTS, json=body, headers=ORIGIN).status_code == 201
        assert sum(_lookups(client, o) for o in ("found", "missing", "busy", "failed")) == 0
        retry = consent_body(BUNDLE, "v0", idempotency_key="k-0", attempt=2)
        again = client.post(CONSENTS, json=retry, headers=ORIGIN)
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize("attempt", [0, -1, 1001, "2", 1.5, True, None])
def test_attempt_is_a_whole_number_from_1_to_1000(tmp_path: Path, attempt: Any) -> None:
    settings = Settings(data_dir=tmp_path / "data", durability="process")
    with TestClient(recording_app(settings), client=PEER) as client:
        body = consent_body(BUNDLE, "ann", idempotency_key="k", attempt=attempt)
        answer = client.post(CONSENTS, json=body, headers=ORIGIN)
        if attempt is None:  # absent: a first send
            assert answer.status_code == 201
            return
        assert answer.status_code == 400
        assert (answer.json()["error"], answer.json()["field"]) == ("invalid_field", "attempt")
        assert client.app.state.recording.outbox.depth == 0  # type: ignore[attr-defined]


@pytest.mark.postgres
async def test_lookups_are_bounded_in_number_and_in_time(
    pg_dsn: str,  # noqa: F811
) -> None:
    """A store that hangs (a lock held on the records) and a burst of retries: at most
    IN_FLIGHT lookups wait, each at most TIMEOUT_S; the others are not asked at all, and
    every retry goes on to be recorded. After a failure the store is left alone for the
    cooldown (a retry is recorded at once), then asked again."""
    store = PostgresStore(pg_dsn, pool_size=store_retries.IN_FLIGHT + 2)
    await store.open()
    retries = StoreRetries(lambda: store, CollectorRegistry(), cooldown=0.5)
    holder = await asyncpg.connect(pg_dsn)
    try:
        await holder.execute("BEGIN; LOCK TABLE consent_records IN ACCESS EXCLUSIVE MODE")
        burst = [make_record(f"s{i}", key=f"k{i}") for i in range(store_retries.IN_FLIGHT + 3)]
        start = time.monotonic()
        found = await asyncio.gather(*(retries.earlier(r, time.time_ns() - DAY_NS) for r in burst))
        elapsed = time.monotonic() - start
        assert found == [None] * len(burst)
        assert store_retries.TIMEOUT_S <= elapsed < store_retries.TIMEOUT_S + 2
        outcomes = {o: retries.m_lookups.labels(o)._value.get() for o in ("failed", "busy")}
        assert outcomes == {"failed": store_retries.IN_FLIGHT, "busy": 3}
        start = time.monotonic()
        assert await retries.earlier(burst[0], time.time_ns() - DAY_NS) is None
        assert time.monotonic() - start < 0.1  # not asked: the store failed moments ago
        assert retries.m_lookups.labels("unreachable")._value.get() == 1
        await holder.execute("ROLLBACK")
        await asyncio.sleep(0.5)
        assert await retries.earlier(burst[0], time.time_ns() - DAY_NS) is None
        assert retries.m_lookups.labels("missing")._value.get() == 1  # asked again
    finally:
        if holder.is_in_transaction():
            await holder.execute("ROLLBACK")
        await holder.close()
        await store.close()
