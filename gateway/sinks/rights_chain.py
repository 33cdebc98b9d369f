"""Rights-request transitions in the audit chain, in both central stores: stored and linked in
one step, in the caller's transaction (gateway/core/transition_chain.py says what a link
commits to).

Each site's transitions form the chain node ``rights:<site>`` in the same ``audit_chain`` and
``audit_heads`` tables as the records, so checkpoints sign their heads and ``audit verify``
walks them like any node. The node's head row is the single owner of its order: PostgreSQL
locks it (``SELECT … FOR UPDATE``) until the transaction ends; in SQLite the caller's write
transaction (``BEGIN IMMEDIATE``) holds the whole file. Transitions stored before the chain
(schema version 1 of the rights tables) are linked once, by the migration that adds it, in
(time, request, seq) order: the chain vouches for them from the upgrade on, not before (the
README's audit section says so); one whose request is gone stays unlinked and ``verify``
reports it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from itertools import groupby
from typing import TYPE_CHECKING, Any

from gateway.core import transition_chain as transitions
from gateway.core.hashchain import GENESIS, link
from gateway.sinks.rights import Transition
from gateway.sinks.sqlite_common import transaction_of

if TYPE_CHECKING:
    import asyncpg  # the PostgreSQL functions' connections; a SQLite worker never loads it

# The shape of rights_transitions with the chain: the request's site, the kept personal
# digest, and a reason that erasure may set to NULL.
SQLITE_TABLE = """
CREATE TABLE IF NOT EXISTS rights_transitions (
    request_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    at TEXT NOT NULL,
    site TEXT,
    personal_digest BLOB,
    PRIMARY KEY (request_id, seq)
) WITHOUT ROWID;
"""
_SQLITE_VERSION = 2  # 1: transitions without the chain
_SQLITE_REBUILD = (
    "ALTER TABLE rights_transitions RENAME TO rights_transitions_v1",
    SQLITE_TABLE,
    "INSERT INTO rights_transitions (request_id, seq, from_state, to_state, actor, reason, at, "
    "site) SELECT t.request_id, t.seq, t.from_state, t.to_state, t.actor, t.reason, t.at, "
    "r.site FROM rights_transitions_v1 t LEFT JOIN rights_requests r USING (request_id)",
    "DROP TABLE rights_transitions_v1",
)
PG_MIGRATION_SQL = """
    ALTER TABLE rights_transitions
        ADD COLUMN site text COLLATE "C",
        ADD COLUMN personal_digest bytea,
        ALTER COLUMN reason DROP NOT NULL;
    UPDATE rights_transitions t SET site = r.site
        FROM rights_requests r WHERE r.request_id = t.request_id;
"""
_COLUMNS = "request_id, seq, from_state, to_state, actor, reason, at, site"

Item = tuple[dict[str, Any], bytes]  # (content, kept personal digest)


def items_of(rows: Sequence[Sequence[Any]]) -> list[Item]:
    """Transitions as (request_id, seq, from, to, actor, reason, at, site) rows, with their
    kept personal digests."""
    out = []
    for request_id, seq, from_state, to_state, actor, reason, at, site in rows:
        data = transitions.content(request_id, seq, site, from_state, to_state, actor, reason, at)
        out.append((data, transitions.personal(data)))
    return out


def _links(head: tuple[int, bytes], items: Sequence[Item]) -> list[tuple[int, bytes, bytes]]:
    """(seq, prev, hash) of each item after ``head``, in order."""
    n, prev = head
    out = []
    for data, kept in items:
        n += 1
        current = link(prev, transitions.KIND, transitions.digest(data, kept))
        out.append((n, prev, current))
        prev = current
    return out


# PostgreSQL -----------------------------------------------------------------------------


async def add_pg(conn: asyncpg.Connection, site: str, t: Transition) -> None:
    """Store transition ``t`` of a request of ``site`` and link it (the caller's transaction
    holds the request's row, so its seq cannot race)."""
    seq = await conn.fetchval(
        "SELECT coalesce(max(seq), 0) + 1 FROM rights_transitions WHERE request_id = $1",
        t.request_id,
    )
    row = (t.request_id, seq, t.from_state, t.to_state, t.actor, t.reason, t.at, site)
    await store_pg(conn, site, items_of([row]), insert=True)


async def store_pg(
    conn: asyncpg.Connection, site: str, items: Sequence[Item], *, insert: bool
) -> None:
    """Link ``items`` (transitions of ``site``, in order) after the site's head, storing them
    (``insert``) or giving the stored ones their kept digests (migration); in the caller's
    transaction."""
    node = transitions.node_of(site)
    await conn.execute(
        "INSERT INTO audit_heads VALUES ($1, 0, $2) ON CONFLICT (node_id) DO NOTHING", node, GENESIS
    )
    head = await conn.fetchrow(
        "SELECT seq, hash FROM audit_heads WHERE node_id = $1 FOR UPDATE", node
    )
    links = _links((head["seq"], bytes(head["hash"])), items)
    if insert:
        await conn.executemany(
            "INSERT INTO rights_transitions (request_id, seq, from_state, to_state, actor, "
            "reason, at, site, personal_digest) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [(*_row(d), kept) for d, kept in items],
        )
    else:
        await conn.executemany(
            "UPDATE rights_transitions SET personal_digest = $3 WHERE request_id = $1 AND seq = $2",
            [(*_key(d), kept) for d, kept in items],
        )
    await conn.executemany(
        "INSERT INTO audit_chain (node_id, seq, kind, ref, site, recorded_at, prev_hash, hash) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [
            (node, n, transitions.KIND, d["record_id"], site, datetime.fromisoformat(d["at"]),
             prev, h)
            for (d, _), (n, prev, h) in zip(items, links, strict=True)
        ],
    )  # fmt: skip
    last, _, head_hash = links[-1]
    await conn.execute(
        "UPDATE audit_heads SET seq = $2, hash = $3 WHERE node_id = $1", node, last, head_hash
    )


def _key(data: dict[str, Any]) -> tuple[str, int]:
    request_id, seq = data["record_id"].rsplit("/", 1)
    return request_id, int(seq)


def _row(data: dict[str, Any]) -> tuple[Any, ...]:
    return (*_key(data), data["from_state"], data["to_state"], data["actor"], data["reason"],
            data["at"], data["site"])  # fmt: skip


async def migrate_pg(conn: asyncpg.Connection) -> None:
    """Rights schema version 2: the chain's columns, and every transition stored before it
    linked now (one site at a time)."""
    await conn.execute(PG_MIGRATION_SQL)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM rights_transitions WHERE site IS NOT NULL "
        f"ORDER BY site, at, request_id, seq"
    )
    for site, group in groupby(rows, key=lambda r: str(r["site"])):
        await store_pg(conn, site, items_of([tuple(r) for r in group]), insert=False)


async def erase_reasons_pg(conn: asyncpg.Connection, request_ids: Sequence[str]) -> int:
    """Erase the free-text reasons of the requests (in the caller's transaction): their
    transitions' (the kept personal digests keep the chain verifiable), the request's current
    one, and the copies in its stored events; how many transitions' reasons were erased."""
    ids = list(request_ids)
    status = await conn.execute(
        "UPDATE rights_transitions SET reason = NULL "
        "WHERE request_id = ANY($1::text[]) AND reason IS NOT NULL",
        ids,
    )
    await conn.execute(
        "UPDATE rights_requests SET reason = '' WHERE request_id = ANY($1::text[])", ids
    )
    await conn.execute(
        "UPDATE rights_events SET body = jsonb_set(body, '{request,reason}', '\"\"') "
        "WHERE request_id = ANY($1::text[]) AND body #>> '{request,reason}' <> ''",
        ids,
    )
    return int(status.split()[-1])


# SQLite ---------------------------------------------------------------------------------


def add_sqlite(conn: sqlite3.Connection, site: str, t: Transition) -> None:
    """Store transition ``t`` of a request of ``site`` and link it, in the caller's write
    transaction."""
    (seq,) = conn.execute(
        "SELECT coalesce(max(seq), 0) + 1 FROM rights_transitions WHERE request_id = ?",
        (t.request_id,),
    ).fetchone()
    row = (t.request_id, seq, t.from_state, t.to_state, t.actor, t.reason, t.at, site)
    store_sqlite(conn, site, items_of([row]), insert=True)


def store_sqlite(conn: sqlite3.Connection, site: str, items: Sequence[Item], *, insert: bool
                 ) -> None:  # fmt: skip
    """As ``store_pg``, in the caller's write transaction."""
    node = transitions.node_of(site)
    found = conn.execute("SELECT seq, hash FROM audit_heads WHERE node_id = ?", (node,))
    seq, prev = found.fetchone() or (0, GENESIS)
    links = _links((seq, bytes(prev)), items)
    if insert:
        conn.executemany(
            "INSERT INTO rights_transitions (request_id, seq, from_state, to_state, actor, "
            "reason, at, site, personal_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*_row(d), kept) for d, kept in items],
        )
    else:
        conn.executemany(
            "UPDATE rights_transitions SET personal_digest = ? WHERE request_id = ? AND seq = ?",
            [(kept, *_key(d)) for d, kept in items],
        )
    conn.executemany(
        "INSERT INTO audit_chain VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (node, n, transitions.KIND, d["record_id"], site, d["at"], _key(d)[1], p, h, kept)
            for (d, kept), (n, p, h) in zip(items, links, strict=True)
        ],
    )
    conn.execute(
        "INSERT INTO audit_heads VALUES (?, ?, ?) ON CONFLICT (node_id) "
        "DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        (node, links[-1][0], links[-1][2]),
    )


def migrate_sqlite(conn: sqlite3.Connection) -> None:
    """Bring the rights tables to the chained shape (version 2) in one write transaction:
    a version 1 table is rebuilt (its reason becomes erasable) and its transitions linked."""

    def body(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS rights_schema_version (version INTEGER NOT NULL)")
        (version,) = conn.execute("SELECT max(version) FROM rights_schema_version").fetchone()
        if version is not None and version >= _SQLITE_VERSION:
            return
        columns = {r[1] for r in conn.execute("PRAGMA table_info(rights_transitions)")}
        if "personal_digest" not in columns:
            for statement in _SQLITE_REBUILD:
                conn.execute(statement)
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM rights_transitions WHERE site IS NOT NULL "
            "ORDER BY site, at, request_id, seq"
        ).fetchall()
        for site, group in groupby(rows, key=lambda r: str(r[7])):
            store_sqlite(conn, site, items_of(list(group)), insert=False)
        conn.execute("DELETE FROM rights_schema_version")
        conn.execute("INSERT INTO rights_schema_version VALUES (?)", (_SQLITE_VERSION,))

    transaction_of(body)(conn)


def erase_reasons_sqlite(conn: sqlite3.Connection, request_ids: Sequence[str]) -> int:
    """As ``erase_reasons_pg``; then the erased text is overwritten in the file."""

    def run(conn: sqlite3.Connection) -> int:
        erased = 0
        for rid in request_ids:
            erased += conn.execute(
                "UPDATE rights_transitions SET reason = NULL "
                "WHERE request_id = ? AND reason IS NOT NULL",
                (rid,),
            ).rowcount
            conn.execute("UPDATE rights_requests SET reason = '' WHERE request_id = ?", (rid,))
            conn.execute(
                "UPDATE rights_events SET body = json_set(body, '$.request.reason', '') "
                "WHERE request_id = ? AND json_extract(body, '$.request.reason') <> ''",
                (rid,),
            )
        return erased

    erased = transaction_of(run)(conn)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return erased
