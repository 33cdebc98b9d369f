"""The central store's directory, the same tests on the embedded SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.sinks.directory import Directory, Link, PreferenceState, StoredKey
from gateway.sinks.directory_postgres import PostgresDirectory
from gateway.sinks.directory_sqlite import SqliteDirectory
from tests.pg import STORES, scratch_database

T0 = "2026-12-06T10:00:00.000000Z"
T1 = "2026-12-06T11:00:00.000000Z"


@pytest.fixture(params=STORES)
async def where(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store location: a SQLite file path or a scratch PostgreSQL database's DSN."""
    if request.param == "sqlite":
        yield str(tmp_path / "store.sqlite3")
    else:
        async with scratch_database() as name:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"


def make(where: str) -> Directory:
    if where.startswith("postgresql://"):
        return PostgresDirectory(where)
    return SqliteDirectory(Path(where))


@pytest.fixture
async def directory(where: str) -> AsyncIterator[Directory]:
    d = make(where)
    await d.open()
    yield d
    await d.close()


def prefs(channels: dict[str, bool], **topics: dict[str, object]) -> dict[str, object]:
    return {"channels": channels, "topics": topics}


async def test_keys_round_trip_and_revoke_once(directory: Directory) -> None:
    key = StoredKey("0123456789ab", "demo", "crm", ("subjects:read",), "a" * 64, T0)
    await directory.add_key(key)
    assert await directory.get_key("0123456789ab") == key
    assert await directory.get_key("ffffffffffff") is None
    assert [k.key_id for k in await directory.list_keys("demo")] == ["0123456789ab"]
    assert await directory.list_keys("other") == []
    assert await directory.revoke_key("0123456789ab", T1)
    assert not await directory.revoke_key("0123456789ab", T1)
    revoked = await directory.get_key("0123456789ab")
    assert revoked is not None and revoked.revoked_at == T1


async def test_every_node_sharing_the_store_gets_the_same_secret(
    where: str, directory: Directory
) -> None:
    first = await directory.deployment_secret("identity_key", lambda: "one")
    other = make(where)
    await other.open()
    try:
        assert await other.deployment_secret("identity_key", lambda: "two") == first == "one"
    finally:
        await other.close()


async def test_links_are_idempotent_and_found_both_ways(directory: Directory) -> None:
    links = [
        Link("demo", "sub-a", "email", "h1", T0, "api"),
        Link("demo", "sub-a", "phone", "h2", T0, "api"),
        Link("demo", "sub-b", "email", "h1", T1, "token"),
    ]
    await directory.link(links)
    await directory.link(links[:1])
    assert await directory.subjects_for("demo", "h1") == ["sub-b", "sub-a"]  # newest first
    assert await directory.subjects_for("other", "h1") == []
    assert await directory.identity_types("demo", "sub-a") == ["email", "phone"]
    assert await directory.identity_types("demo", "sub-c") == []


async def test_the_newest_preference_state_wins_in_any_arrival_order(
    directory: Directory,
) -> None:
    new = PreferenceState("demo", "sub-a", "", prefs({"email": False}), "r2", T1)
    old = PreferenceState("demo", "sub-a", "", prefs({"email": True}), "r1", T0)
    shop = PreferenceState("demo", "sub-a", "shop", prefs({"sms": True}), "r3", T0)
    await directory.write_preferences([new, shop])
    await directory.write_preferences([old])  # late delivery of an older state
    states = await directory.preferences_of("demo", "sub-a")
    assert [(s.product_line, s.record_id) for s in states] == [("", "r2"), ("shop", "r3")]
    assert states[0].preferences == prefs({"email": False})


async def test_contact_rows_join_links_and_states(directory: Directory) -> None:
    await directory.link(
        [
            Link("demo", "sub-a", "email", "h1", T0, "api"),
            Link("demo", "sub-b", "email", "h2", T0, "api"),
        ]
    )
    await directory.write_preferences(
        [
            PreferenceState("demo", "sub-a", "", prefs({"email": True}), "r1", T0),
            PreferenceState("demo", "sub-a", "shop", prefs({"email": False}), "r2", T1),
            PreferenceState("demo", "sub-a", "insurance", prefs({}), "r3", T1),
        ]
    )
    rows = await directory.contact_rows("demo", ["h1", "h2", "h3", "h1"], "shop")
    found = sorted((r.identity_hash, r.subject_id, r.record_id or "") for r in rows)
    # Site-wide and the asked product line only; a linked subject without state; no unknowns.
    assert found == [("h1", "sub-a", "r1"), ("h1", "sub-a", "r2"), ("h2", "sub-b", "")]
    shop = next(r for r in rows if r.record_id == "r2")
    assert shop.preferences == prefs({"email": False}) and shop.updated_at == T1
    assert shop.product_line == "shop"


async def test_a_token_links_once_across_nodes(where: str, directory: Directory) -> None:
    """Threat: a token copied from a browser is replayed against another node."""
    other = make(where)
    await other.open()
    link = [Link("demo", "sub-a", "email", "h1", T0, "token")]
    again = [Link("demo", "sub-b", "email", "h1", T0, "token")]
    try:
        assert await directory.link_once("n1", expires_at=200, now=100, links=link)
        assert not await other.link_once("n1", expires_at=200, now=150, links=again)
        assert await directory.subjects_for("demo", "h1") == ["sub-a"]  # nothing of the replay
        assert await other.link_once("n2", expires_at=300, now=150, links=again)
        # Once expired, a nonce is forgotten (the token itself is refused by its expiry).
        assert await directory.link_once("n1", expires_at=400, now=250, links=link)
    finally:
        await other.close()
