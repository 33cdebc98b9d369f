"""Preference and identity-link records: the codec, the leaf-by-leaf latest state, and the
stores (embedded SQLite and real PostgreSQL) keeping them append-only and chained."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import service as audit
from gateway.core.preference_change import merge
from gateway.core.preference_record import LINK_KIND, PREFERENCE_KIND, LinkRecord, PreferenceRecord
from gateway.core.record_codec import (
    decode_object,
    decode_record,
    encode_record,
    kind_of,
    kind_of_body,
)
from gateway.core.settings import Settings
from gateway.recording.fields import Uuid7Clock, rfc3339_utc
from gateway.recording.receipts import canonical_json
from gateway.sinks.directory_postgres import PostgresDirectory
from gateway.sinks.directory_sqlite import SqliteDirectory
from gateway.sinks.postgres import PostgresStore
from gateway.sinks.preference_state import EMPTY, fold
from gateway.sinks.sqlite import SqliteStore
from tests.pg import make_record, pg_dsn  # noqa: F401

_CLOCK = Uuid7Clock()
_NS = [1_765_000_000_000_000_000]


def preference(
    subject: str, change: dict[str, Any], *, line: str = "", **extra: Any
) -> PreferenceRecord:
    """A plausible stored preference record with a fresh time-ordered id."""
    _NS[0] += 1_000_000
    record_id, ns = _CLOCK.next(_NS[0])
    data: dict[str, Any] = {
        "kind": PREFERENCE_KIND,
        "record_id": record_id,
        "recorded_at": rfc3339_utc(ns),
        "site": "demo",
        "subject_id": subject,
        "product_line": line,
        "preferences": change,
        "channel": "web",
        "evidence": None,
        "actor": "subject",
        "language": "en",
        "ip_truncated": "203.0.113.0/24",
        "user_agent": "pytest",
        "origin": "https://shop.example",
        "node_id": "test-node",
        "idempotency_key": None,
    }
    data.update(extra)
    return PreferenceRecord(**data)


def link_record(subject: str, digest: str = "ab" * 32) -> LinkRecord:
    _NS[0] += 1_000_000
    record_id, ns = _CLOCK.next(_NS[0])
    return LinkRecord(
        LINK_KIND, record_id, rfc3339_utc(ns), "demo", subject, "email", digest, "api", "test-node"
    )


CHANGES: list[dict[str, Any]] = [
    {"channels": {"email": True, "sms": True}},
    {"topics": {"offers": {"enabled": True, "frequency": "weekly"}}},
    {"topics": {"offers": {"frequency": "monthly"}}, "channels": {"sms": False}},
    {"topics": {"offers": {"channels": {"email": False}}}},
    {"topics": {"newsletter": {"enabled": True, "frequency": "weekly"}}},
]
FINAL = {
    "channels": {"email": True, "sms": False},
    "topics": {
        "offers": {"enabled": True, "frequency": "monthly", "channels": {"email": False}},
        "newsletter": {"enabled": True, "frequency": "weekly"},
    },
}


def test_the_codec_round_trips_every_kind_and_routes_stored_bodies() -> None:
    consent = make_record("c")
    change = preference("p", CHANGES[1], evidence={"collected_by": "x", "method": "tablet"})
    link = link_record("l")
    for record in (consent, change, link):
        assert decode_record(encode_record(record)) == record
        # The outbox stores the canonical JSON (sorted keys): routing must not rely on order.
        for body in (encode_record(record), canonical_json(record)):
            assert kind_of_body(body.decode()) == kind_of(record.as_json())
            assert decode_object(body) == (record.as_json(), "")
    assert [kind_of(r.as_json()) for r in (consent, change, link)] == [
        "consent",
        "preference",
        "identity_link",
    ]
    obj, why = decode_object(b'{"kind": "preference", "record_id": "x"}')
    assert obj == {} and why.startswith("not a preference record")


def _fold_all(records: list[PreferenceRecord]) -> dict[str, Any]:
    states: dict[Any, Any] = {}
    fold(states, [r.as_json() for r in records])
    return dict(states[("demo", "s", "")].preferences)


def test_the_state_is_the_recorded_order_whatever_the_delivery_order() -> None:
    """Threat: the forwarder's two workers (or a redelivery after a lost ack) hand changes
    to the store out of order, and an older choice overwrites a newer one."""
    records = [preference("s", c) for c in CHANGES]
    for order in itertools.permutations(records):
        assert _fold_all(list(order)) == FINAL
    assert _fold_all(records + records[:2]) == FINAL  # redelivered: no effect


leaf = st.sampled_from(["email", "sms", "push"])
change_strategy = st.one_of(
    st.fixed_dictionaries({"channels": st.dictionaries(leaf, st.booleans(), min_size=1)}),
    st.fixed_dictionaries(
        {
            "topics": st.dictionaries(
                st.sampled_from(["offers", "newsletter"]),
                st.fixed_dictionaries(
                    {},
                    optional={
                        "enabled": st.booleans(),
                        "frequency": st.sampled_from(["weekly", "monthly", None]),
                        "channels": st.dictionaries(leaf, st.booleans(), min_size=1),
                    },
                ).filter(bool),
                min_size=1,
            )
        }
    ),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(change_strategy, min_size=1, max_size=8), st.randoms())
def test_merge_is_independent_of_order_and_repetition(
    changes: list[dict[str, Any]], rnd: random.Random
) -> None:
    stamped = [(c, f"2026-12-06T10:00:{i:02d}.000000Z|{i:04d}") for i, c in enumerate(changes)]
    state: dict[str, Any] = EMPTY.preferences
    stamps: dict[str, str] = {}
    for change, stamp in stamped:
        state, stamps = merge(state, stamps, change, stamp)
    shuffled = stamped * 2
    rnd.shuffle(shuffled)
    other: dict[str, Any] = EMPTY.preferences
    other_stamps: dict[str, str] = {}
    for change, stamp in shuffled:
        other, other_stamps = merge(other, other_stamps, change, stamp)
    assert (other, other_stamps) == (state, stamps)


async def _check_store(store: Any, directory: Any) -> list[PreferenceRecord]:
    records = [preference("s", c) for c in CHANGES]
    consent = make_record("s")
    lined = preference("s", {"channels": {"push": True}}, line="shop")
    link = link_record("s")
    # Mixed batches, the last ones out of order, one delivered twice.
    await store.write_batch([consent, records[0], link])
    await store.write_batch([records[3], records[4], lined])
    await store.write_batch([records[1], records[2]])
    await store.write_batch([records[1], records[2], link])
    states = {s.product_line: s for s in await directory.preferences_of("demo", "s")}
    assert states[""].preferences == FINAL
    assert states[""].record_id == records[4].record_id
    assert states[""].updated_at == records[4].recorded_at
    assert states["shop"].preferences == {"channels": {"push": True}, "topics": {}}
    history = await store.preference_history("demo", "s")
    assert [h["record_id"] for h in history] == [
        r.record_id for r in sorted([*records, lined], key=lambda r: r.recorded_at, reverse=True)
    ]
    assert history[-1] == records[0].as_json()
    assert (await store.subject_history("demo", "s"))["current"] == consent.as_json()
    return records


async def test_the_embedded_store_keeps_history_and_latest_state(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3")
    directory = SqliteDirectory(tmp_path / "store.sqlite3")
    await store.open()
    await directory.open()
    try:
        await _check_store(store, directory)
    finally:
        await store.close()
        await directory.close()


@pytest.mark.postgres
async def test_postgresql_keeps_history_and_latest_state_and_chains_them(
    pg_dsn: str,  # noqa: F811
) -> None:
    store = PostgresStore(pg_dsn, pool_size=2)
    directory = PostgresDirectory(pg_dsn)
    await store.open()
    await directory.open()
    try:
        records = await _check_store(store, directory)
    finally:
        await store.close()
        await directory.close()
    settings_ = Settings(store_url=pg_dsn, audit_key="k" * 32)
    report = await audit.verify(settings_)
    assert report.ok, report.as_json()
    assert report.checked == 1 + len(CHANGES) + 1  # the consent and the preference changes
    conn = await asyncpg.connect(pg_dsn)
    try:
        kinds = await conn.fetch("SELECT kind, count(*) FROM audit_chain GROUP BY kind ORDER BY 1")
        assert [(r[0], r[1]) for r in kinds] == [("consent", 1), ("preference", 6)]
        assert await conn.fetchval("SELECT count(*) FROM identity_link_records") == 1
        # A segment: who may be e-mailed about the newsletter weekly.
        rows = await conn.fetch(
            "SELECT subject_id, frequency FROM contact_permissions "
            "WHERE site = 'demo' AND channel = 'email' AND topic = 'newsletter'"
        )
        assert [(r[0], r[1]) for r in rows] == [("s", "weekly")]
        # Offers are off on e-mail (unsubscribed) and SMS is off: no row for either.
        assert not await conn.fetch(
            "SELECT 1 FROM contact_permissions WHERE topic = 'offers' AND channel IN "
            "('email', 'sms')"
        )
        # A rights deletion blanks the request facts: the history still verifies.
        await conn.execute(
            "UPDATE preference_records SET ip_truncated = NULL, user_agent = '', "
            "idempotency_key = NULL WHERE subject_id = 's'"
        )
        erased = await conn.fetchval("SELECT count(*) FROM audit_chain WHERE kind = 'erasure'")
        assert erased == 6
        report = await audit.verify(settings_)
        assert report.ok, report.as_json()
        # Threat: someone with write access edits a preference record after the fact.
        changed = orjson.dumps({"channels": {"email": False}}).decode()
        await conn.execute(
            "UPDATE preference_records SET preferences = $1::jsonb WHERE record_id = $2",
            changed,
            records[0].record_id,
        )
    finally:
        await conn.close()
    report = await audit.verify(settings_)
    assert report.first_break is not None
    assert report.first_break.problem == "changed"
    assert report.first_break.ref == records[0].record_id
