"""Rights-request transitions in the audit chain, on both central stores: `audit verify`
locates a changed, removed, forged or reordered transition and exits non-zero naming it; a
clean store verifies per kind; a store from before the chain is linked when the rights store
first opens it; erasing a transition's reason keeps the chain green.

Threat: someone with write access to the store rewrites the history of a data subject
request (when it was received, who closed it, why it was denied) after the fact, e.g. to hide
a missed legal deadline.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from starlette.testclient import TestClient

from gateway.audit import service
from gateway.audit.chain import GENESIS, personal_digest, split_digest
from gateway.core import transition_chain as transitions
from gateway.core.settings import Settings
from gateway.rights.base import store_for
from gateway.sinks import (
    directory_postgres,
    pg_common,
    postgres,
    rights_chain,
    rights_postgres,
    rights_sqlite,
    sqlite_audit,
)
from gateway.sinks.erasure_sqlite import ensure_tables
from gateway.sinks.rights import (
    COLUMNS,
    ERASED_FIELDS,
    JSON_COLUMNS,
    StoredRequest,
    Transition,
    column_value,
)
from gateway.sinks.sqlite import FILE_NAME
from gateway.sinks.sqlite_common import create_tables
from tests.audit_stores import Backend, backend_fixture  # noqa: F401
from tests.helpers import make_settings
from tests.pg import make_record, pg_dsn  # noqa: F401

# (from, to, actor, reason) of each request's life: four transitions a request.
LIFE = (
    (None, "received", "subject", ""),
    ("received", "verifying", "system", "code sent"),
    ("verifying", "in_progress", "subject", "code confirmed"),
    ("in_progress", "denied", "admin", "the requester Jane Doe of 1 Main St is not the subject"),
)


def _at(n: int) -> str:
    return f"2026-03-{1 + n // 24:02d}T{n % 24:02d}:00:00.000000Z"


def _request(site: str, n: int) -> StoredRequest:
    return StoredRequest(
        request_id=str(uuid.UUID(int=n + 1)), site=site, type="access", state="received",
        rule_id="eu-gdpr", region={"country": "DE", "subdivision": None},
        verification="email", subject_ids=(f"subject-{n}",), identity_type="email",
        identity_hash="ab" * 32, token_hash="cd" * 32, code_hash=None, code_expires_at=None,
        code_attempts=0, details={}, language="en", received_at=_at(n), due_at=_at(n + 700),
        updated_at=_at(n),
    )  # fmt: skip


async def _fill(settings: Settings, sites: Sequence[str], per_site: int) -> list[str]:
    """``per_site`` requests on each site, each through LIFE; the ids, in creation order."""
    if not settings.store_url:
        await ensure_tables(settings.data_dir / FILE_NAME)  # the records' side of the store
    store = store_for(settings)
    await store.open()
    ids = []
    try:
        n = 0
        for site in sites:
            for _ in range(per_site):
                request = _request(site, n)
                first = Transition(request.request_id, *LIFE[0], at=_at(n))
                await store.create(request, first, [], [])
                for step, (before, after, actor, reason) in enumerate(LIFE[1:], 1):
                    moved = Transition(request.request_id, before, after, actor, reason, _at(n))
                    changes = {"state": after, "updated_at": _at(n), "reason": reason}
                    # The request's event carries the reason too, as the service's do.
                    told = [("rights.request.updated", {"request": {"reason": reason}})]
                    assert await store.update(request.request_id, str(before), changes, moved,
                                              told)  # fmt: skip
                    assert step
                ids.append(request.request_id)
                n += 1
    finally:
        await store.close()
    return ids


@pytest.fixture
async def filled(backend: Backend) -> tuple[Backend, list[str]]:
    return backend, await _fill(backend.settings, ["demo", "other"], 5)


async def _first(backend: Backend, **kw: object) -> tuple[str, str | None, str | None]:
    report = await service.verify(backend.settings, **kw)  # type: ignore[arg-type]
    assert report.first_break is not None, report.as_json()
    b = report.first_break
    return b.problem, b.ref, b.kind


async def test_a_clean_store_verifies_per_kind_and_checkpoints_sign_the_rights_heads(
    filled: tuple[Backend, list[str]],
) -> None:
    backend, ids = filled
    report = await service.verify(backend.settings)
    assert report.ok, report.as_json()
    assert report.kinds["rights"].checked == len(ids) * len(LIFE) == 40
    assert report.as_json()["kinds"]["rights"] == {
        "ok": True, "checked": 40, "problems": 0, "first_break": None,
    }  # fmt: skip
    heads = dict(await backend.sql("SELECT node_id, seq FROM audit_heads"))
    assert heads == {"rights:demo": 20, "rights:other": 20}
    taken = await service.checkpoint(backend.settings)
    assert taken["heads"]["rights:demo"][0] == 20
    again = await service.verify(backend.settings)
    assert again.ok and again.checkpoints == 1
    await backend.assert_cli_verifies("rights", 40)


async def test_a_changed_transition_is_located_by_the_cli(
    filled: tuple[Backend, list[str]],
) -> None:
    backend, ids = filled
    await backend.sql(
        "UPDATE rights_transitions SET at = ? WHERE request_id = ? AND seq = 4",
        "2026-01-01T00:00:00.000000Z", ids[2],
    )  # fmt: skip
    assert await _first(backend) == ("changed", f"{ids[2]}/4", "rights")
    ran = await backend.cli_verify()
    assert ran.returncode == 2
    assert f"BROKEN: changed at node 'rights:demo' link 12 record {ids[2]}/4 [rights]" in ran.stdout


async def test_a_changed_reason_or_actor_is_located(filled: tuple[Backend, list[str]]) -> None:
    backend, ids = filled
    await backend.sql(
        "UPDATE rights_transitions SET reason = 'approved' WHERE request_id = ? AND seq = 4",
        ids[6],
    )
    assert await _first(backend) == ("changed", f"{ids[6]}/4", "rights")
    await backend.sql(
        "UPDATE rights_transitions SET actor = 'system' WHERE request_id = ? AND seq = 1", ids[6]
    )
    assert await _first(backend) == ("changed", f"{ids[6]}/1", "rights")


async def test_a_removed_transition_is_located(filled: tuple[Backend, list[str]]) -> None:
    backend, ids = filled
    await backend.sql("DELETE FROM rights_transitions WHERE request_id = ? AND seq = 3", ids[1])
    assert await _first(backend) == ("removed", f"{ids[1]}/3", "rights")
    # With its link too: a gap in the site's chain.
    await backend.sql("DELETE FROM audit_chain WHERE ref = ?", f"{ids[1]}/3")
    report = await service.verify(backend.settings)
    assert report.first_break is not None
    assert (report.first_break.problem, report.first_break.seq) == ("missing_links", 8)
    ran = await backend.cli_verify()
    assert ran.returncode == 2 and "missing_links at node 'rights:demo' link 8" in ran.stdout


async def test_a_forged_transition_is_found(filled: tuple[Backend, list[str]]) -> None:
    backend, ids = filled
    await backend.sql(
        "INSERT INTO rights_transitions (request_id, seq, from_state, to_state, actor, reason, "
        "at, site) VALUES (?, 5, 'denied', 'completed', 'admin', '', ?, 'demo')",
        ids[3], _at(3),
    )  # fmt: skip
    assert await _first(backend) == ("unlinked", f"{ids[3]}/5", "rights")
    ran = await backend.cli_verify()
    assert ran.returncode == 2 and f"record {ids[3]}/5 [rights]" in ran.stdout


async def test_reordered_transitions_are_located(filled: tuple[Backend, list[str]]) -> None:
    backend, ids = filled
    # The request's history told in another order: its transitions swap places.
    for swap in ("seq + 100 WHERE seq IN (2, 3)", "105 - seq WHERE seq IN (102, 103)"):
        await backend.sql(f"UPDATE rights_transitions SET seq = {swap} AND request_id = ?", ids[4])
    assert await _first(backend) == ("changed", f"{ids[4]}/2", "rights")


async def test_reordered_links_are_located(filled: tuple[Backend, list[str]]) -> None:
    """A forger who swaps two links' places in the chain (each with its own record) breaks
    the order the links name (each link's prev is its predecessor's link)."""
    backend, _ids = filled
    for swap in ("seq + 100 WHERE seq IN (6, 7)", "113 - seq WHERE seq IN (106, 107)"):
        await backend.sql(f"UPDATE audit_chain SET seq = {swap} AND node_id = 'rights:other'")
    report = await service.verify(backend.settings)
    assert report.first_break is not None
    b = report.first_break
    assert (b.problem, b.node_id, b.seq, b.kind) == ("out_of_order", "rights:other", 6, "rights")


async def test_site_and_since_bound_the_walk(filled: tuple[Backend, list[str]]) -> None:
    backend, ids = filled
    victim = ids[7]  # a request of "other", received at _at(7)
    await backend.sql(
        "UPDATE rights_transitions SET to_state = 'completed' WHERE request_id = ? AND seq = 4",
        victim,
    )
    assert (await service.verify(backend.settings, site="demo")).ok
    assert await _first(backend, site="other") == ("changed", f"{victim}/4", "rights")
    from datetime import datetime

    after = datetime.fromisoformat(_at(8))
    assert (await service.verify(backend.settings, site="other", since=after)).ok
    before = datetime.fromisoformat(_at(7))
    assert await _first(backend, since=before) == ("changed", f"{victim}/4", "rights")
    ran = await backend.cli_verify("--site", "demo")
    assert ran.returncode == 0, ran.stdout
    ran = await backend.cli_verify("--site", "other", "--since", _at(6))
    assert ran.returncode == 2 and f"{victim}/4" in ran.stdout


async def test_erasing_reasons_keeps_the_chain_but_not_a_tamper(
    filled: tuple[Backend, list[str]],
) -> None:
    backend, ids = filled
    store = store_for(backend.settings)
    await store.open()
    try:
        assert await store.erase_reasons([ids[0], ids[5]]) == 8  # every reason of both
        assert [t.reason for t in await store.transitions(ids[0])] == ["", "", "", ""]
    finally:
        await store.close()
    left = await backend.sql(
        "SELECT count(*) FROM rights_transitions WHERE request_id IN (?, ?) "
        "AND reason IS NOT NULL", ids[0], ids[5],
    )  # fmt: skip
    assert left == [(0,)]
    # Nor does the reason stay where the requester, the queue and downstream systems read it:
    # the request's current reason and its stored events; another request keeps its own.
    current = dict(await backend.sql("SELECT request_id, reason FROM rights_requests"))
    assert current[ids[0]] == current[ids[5]] == "" and "Jane Doe" in current[ids[1]]
    events = await backend.sql("SELECT request_id, body FROM rights_events")
    told = {(rid, orjson.loads(body)["request"]["reason"]) for rid, body in events}
    assert {reason for rid, reason in told if rid in (ids[0], ids[5])} == {""}
    assert any("Jane Doe" in reason for rid, reason in told if rid == ids[1])
    report = await service.verify(backend.settings)
    assert report.ok, report.as_json()
    # The kept digest of an erased reason is now what the link rests on: changing it shows.
    await backend.sql(
        "UPDATE rights_transitions SET personal_digest = ? WHERE request_id = ? AND seq = 4",
        GENESIS, ids[5],
    )  # fmt: skip
    assert await _first(backend) == ("changed", f"{ids[5]}/4", "rights")


async def test_a_checkpoint_catches_a_rewritten_rights_chain(
    filled: tuple[Backend, list[str]],
) -> None:
    """A forger who deletes the last transition with its link and moves the head back leaves
    a consistent chain, but not the one the signed checkpoint names."""
    backend, ids = filled
    await service.checkpoint(backend.settings)
    await backend.sql("DELETE FROM rights_transitions WHERE request_id = ? AND seq = 4", ids[4])
    await backend.sql("DELETE FROM audit_chain WHERE node_id = 'rights:demo' AND seq = 20")
    prev = await backend.sql(
        "SELECT hash FROM audit_chain WHERE node_id = 'rights:demo' AND seq = 19"
    )
    await backend.sql(
        "UPDATE audit_heads SET seq = 19, hash = ? WHERE node_id = 'rights:demo'", prev[0][0]
    )
    report = await service.verify(backend.settings)
    assert report.first_break is not None
    b = report.first_break
    assert (b.problem, b.node_id, b.seq, b.kind) == (
        "checkpoint_mismatch", "rights:demo", 20, "rights",
    )  # fmt: skip


# The rights_transitions table before the chain (rights schema version 1 in both stores).
_V1_SQLITE = """
CREATE TABLE IF NOT EXISTS rights_transitions (
    request_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (request_id, seq)
) WITHOUT ROWID;
"""


async def _version_1_store(backend: Backend) -> None:
    """The rights tables as version 1 made them, without the chain's columns."""
    if backend.name == "sqlite":
        await ensure_tables(backend.path)
        old = rights_sqlite._SCHEMA.replace(rights_chain.SQLITE_TABLE, _V1_SQLITE)
        assert old != rights_sqlite._SCHEMA
        conn = sqlite3.connect(backend.path, isolation_level=None)
        try:
            create_tables(conn, old)
        finally:
            conn.close()
        return
    conn = await asyncpg.connect(backend.settings.store_url)
    try:
        await postgres.migrate(conn)
        await directory_postgres.migrate(conn)
        first = rights_postgres.MIGRATIONS[:1]
        await pg_common.migrate(
            conn, lock=1, table="rights_schema_version", migrations=first, what="rights"
        )
    finally:
        await conn.close()


async def _old_rows(backend: Backend, requests: int) -> list[str]:
    """Requests with their LIFE stored the version 1 way, and one orphan transition (its
    request deleted); the request ids."""
    ids = []
    for n in range(requests):
        request = _request("demo", n)
        values = [column_value(c, getattr(request, c)) for c in COLUMNS]
        casts = [
            "::jsonb" if c in JSON_COLUMNS and backend.name == "postgres" else "" for c in COLUMNS
        ]
        marks = ", ".join(f"?{cast}" for cast in casts)
        await backend.sql(f"INSERT INTO rights_requests ({', '.join(COLUMNS)}) VALUES ({marks})",
                          *values)  # fmt: skip
        for seq, (before, after, actor, reason) in enumerate(LIFE, 1):
            await backend.sql(
                "INSERT INTO rights_transitions VALUES (?, ?, ?, ?, ?, ?, ?)",
                request.request_id, seq, before, after, actor, reason, _at(n),
            )  # fmt: skip
        ids.append(request.request_id)
    await backend.sql(
        "INSERT INTO rights_transitions VALUES (?, 1, NULL, 'received', 'subject', '', ?)",
        "00000000-0000-0000-0000-0000000000ff", _at(99),
    )  # fmt: skip
    return ids


async def test_transitions_from_before_the_chain_are_linked_when_the_store_opens(
    backend: Backend,
) -> None:
    await _version_1_store(backend)
    ids = await _old_rows(backend, 6)
    before = await service.verify(backend.settings)
    assert before.first_break is not None
    assert before.kinds["rights"].first_break is not None
    assert "not chained yet" in before.kinds["rights"].first_break.detail
    store = store_for(backend.settings)
    await store.open()  # migrates: version 2, the old transitions linked
    try:
        await store.get(ids[0])  # PostgreSQL migrates on first use
        after = Transition(ids[0], "denied", "completed", "admin", "", _at(200))
        assert await store.update(ids[0], "received", {"state": "completed"}, after, [])
    finally:
        await store.close()
    report = await service.verify(backend.settings)
    # Every old transition is linked (in time order) and the new one after them; the orphan,
    # whose request is gone, is reported, not silently vouched for.
    assert report.kinds["rights"].checked == 6 * len(LIFE) + 1
    assert [(p.problem, p.ref) for p in report.problems] == [
        ("unlinked", "00000000-0000-0000-0000-0000000000ff/1")
    ]
    refs = await backend.sql("SELECT ref FROM audit_chain WHERE node_id = 'rights:demo' "
                             "ORDER BY seq")  # fmt: skip
    assert refs[-1] == (f"{ids[0]}/5",)
    assert sorted(r[0] for r in refs[:-1]) == sorted(f"{i}/{s}" for i in ids for s in range(1, 5))
    # A tamper of an old transition is found like any other.
    await backend.sql("UPDATE rights_transitions SET actor = 'x' WHERE request_id = ? AND seq = 2",
                      ids[3])  # fmt: skip
    assert await _first(backend) == ("changed", f"{ids[3]}/2", "rights")


def test_the_admin_endpoint_reports_per_kind(tmp_path: Path) -> None:
    """GET /admin/v1/sites/{site}/audit/verify: the site's walk, with each kind's count and
    first break (the embedded store; the same service answers on PostgreSQL)."""
    from gateway.app import create_app

    settings = make_settings(tmp_path, admin_token="t" * 32, audit_key="k" * 32)
    ids = asyncio.run(_fill(settings, ["demo", "other"], 3))
    auth = {"Authorization": "Bearer " + "t" * 32}
    with TestClient(create_app(settings)) as client:
        clean = client.get("/admin/v1/sites/demo/audit/verify", headers=auth)
        assert clean.status_code == 200, clean.text
        kinds = clean.json()["kinds"]
        assert kinds["rights"] == {"ok": True, "checked": 12, "problems": 0, "first_break": None}
        assert kinds["consent"]["checked"] == kinds["preference"]["checked"] == 0
        conn = sqlite3.connect(settings.data_dir / FILE_NAME, isolation_level=None)
        conn.execute("UPDATE rights_transitions SET from_state = NULL WHERE request_id = ? "
                     "AND seq = 2", (ids[1],))  # fmt: skip
        conn.close()
        broken = client.get("/admin/v1/sites/demo/audit/verify", headers=auth).json()
        assert broken["ok"] is False
        assert broken["kinds"]["rights"]["problems"] == 1
        assert broken["kinds"]["rights"]["first_break"]["ref"] == f"{ids[1]}/2"
        assert broken["problems"][0]["kind"] == "rights"
        other = client.get("/admin/v1/sites/other/audit/verify", headers=auth)
        assert other.status_code == 404  # no such site in the catalog: a precise 4xx
        since = client.get("/admin/v1/sites/demo/audit/verify?since=nonsense", headers=auth)
        assert since.status_code == 400 and since.json()["field"] == "since"


def test_a_transition_digest_commits_to_its_core_and_the_kept_digest_of_its_reason() -> None:
    """Pure: erasing the reason keeps the digest (from the kept personal digest); changing the
    core, the reason, or the kept digest of an erased reason changes it. The shared helper is
    the embedded store's consent digest generalised (same bytes for consents)."""
    data = transitions.content("r-1", 2, "demo", "received", "verifying", "system", "why", _at(1))
    kept = transitions.personal(data)
    digest = transitions.digest(data, kept)
    erased = {**data, "reason": None}
    assert transitions.digest(erased, kept) == digest
    assert transitions.digest(erased, None) != digest
    assert transitions.digest(erased, GENESIS) != digest
    assert transitions.digest({**data, "reason": "other"}, kept) != digest
    assert transitions.digest({**data, "actor": "admin"}, kept) != digest
    assert transitions.digest({**data, "record_id": "r-1/3"}, kept) != digest
    body = make_record("s").as_json()
    personal = tuple(sorted(ERASED_FIELDS))
    assert sqlite_audit.record_digest(body) == split_digest(
        body, personal, personal_digest(body, personal)
    )


@pytest.mark.postgres
async def test_retention_keeps_the_rights_chains_verifiable(pg_dsn: str) -> None:  # noqa: F811
    """`store retention` retires each chain up to its first live link, rights chains too; it
    drops consent links only, so every transition stays linked and checked (and a tamper of
    a retired one still shows)."""
    from datetime import UTC, datetime

    from gateway.audit import retention
    from gateway.sinks.postgres import PostgresStore

    settings = Settings(store_url=pg_dsn, audit_key="k" * 32)
    records = PostgresStore(pg_dsn, pool_size=1)
    await records.open()
    for month in ("2025-01", "2025-02", "2025-05"):
        await records.write_batch([make_record("a", recorded_at=f"{month}-10T12:00:00.000000Z")])
    await records.close()
    store = store_for(settings)
    await store.open()
    ids = []
    try:
        for n, month in enumerate(("2025-01", "2025-02", "2025-05")):
            at = f"{month}-11T12:00:00.000000Z"
            request = _request("demo", n)
            await store.create(request, Transition(request.request_id, *LIFE[0], at=at), [], [])
            moved = Transition(request.request_id, "received", "verifying", "system", "x", at)
            assert await store.update(
                request.request_id, "received", {"state": "verifying"}, moved, []
            )
            ids.append(request.request_id)
    finally:
        await store.close()
    done = await retention.retention(settings, datetime(2025, 4, 15, tzinfo=UTC), dry_run=False)
    assert done.dropped
    report = await service.verify(settings)
    assert report.ok, report.as_json()
    assert report.kinds["rights"].checked == 6
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "UPDATE rights_transitions SET actor = 'admin' WHERE request_id = $1 AND seq = 2",
            ids[0],
        )
    finally:
        await conn.close()
    assert (await _first(Backend("postgres", settings)))[1:] == (f"{ids[0]}/2", "rights")


async def test_concurrent_writers_cannot_fork_a_site_chain(backend: Backend) -> None:
    """Two rights stores (two gateway processes) move requests of one site at once: the
    site's head row is the single owner of the order, so the chain stays one line."""
    if backend.name == "sqlite":
        await ensure_tables(backend.path)
    stores = [store_for(backend.settings), store_for(backend.settings)]
    for store in stores:
        await store.open()
    try:
        requests = [_request("demo", n) for n in range(12)]

        async def life(store: Any, request: StoredRequest) -> None:
            first = Transition(request.request_id, *LIFE[0], at=_at(1))
            await store.create(request, first, [], [])
            for before, after, actor, reason in LIFE[1:]:
                moved = Transition(request.request_id, before, after, actor, reason, _at(2))
                changes = {"state": after}
                assert await store.update(request.request_id, str(before), changes, moved, [])

        await asyncio.gather(*(life(stores[n % 2], r) for n, r in enumerate(requests)))
    finally:
        for store in stores:
            await store.close()
    report = await service.verify(backend.settings)
    assert report.ok, report.as_json()
    assert report.kinds["rights"].checked == 48
    seqs = await backend.sql("SELECT seq FROM audit_chain WHERE node_id = 'rights:demo' "
                             "ORDER BY seq")  # fmt: skip
    assert [s for (s,) in seqs] == list(range(1, 49))
    assert await backend.sql("SELECT seq FROM audit_heads WHERE node_id = 'rights:demo'") == [(48,)]
