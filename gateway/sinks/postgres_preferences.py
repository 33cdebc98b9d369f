"""Preference records in PostgreSQL: the append-only table and the latest state it folds into;
identity link records beside them.

``preference_records`` is created by the store's migration 4 (postgres_audit.py, with its
chain trigger); ``preference_state`` by the directory's migration, which the store runs too.
A batch is one transaction: the records go in with one ``INSERT … SELECT FROM unnest``
(``ON CONFLICT DO NOTHING``, so the chain trigger sees only newly stored rows), then the
states of the subjects they touch are locked in key order (no deadlock between the
forwarder's two workers), merged leaf by leaf in Python and written back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from gateway.core.record_codec import LINK_KIND, PREFERENCE_COLUMNS, kind_of
from gateway.sinks.base import HISTORY_LIMIT
from gateway.sinks.pg_common import first_keyed
from gateway.sinks.preference_state import Key, State, fold

# Table columns: every record field but ``kind`` (the table is the kind), in field order.
COLUMNS = tuple(c for c in PREFERENCE_COLUMNS if c != "kind")
_TYPES = {
    "record_id": "uuid",
    "recorded_at": "timestamptz",
    "preferences": "jsonb",
    "evidence": "jsonb",
    "extra": "jsonb",
}
_INSERT = (
    f"INSERT INTO preference_records ({', '.join(COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${n}::{_TYPES.get(c, 'text')}[]" for n, c in enumerate(COLUMNS, 1))
    + ") ON CONFLICT (record_id) DO NOTHING RETURNING record_id::text"
)
_LINKS = """
INSERT INTO identity_link_records
    (record_id, recorded_at, site, subject_id, identity_type, identity_hash, source, node_id)
SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::text[])
ON CONFLICT (record_id) DO NOTHING
"""
_LINK_FIELDS = (
    "record_id", "recorded_at", "site", "subject_id", "identity_type", "identity_hash",
    "source", "node_id",
)  # fmt: skip
_PLACEHOLDERS = """
INSERT INTO preference_state
SELECT s, u, l, '{"channels": {}, "topics": {}}', '', 'epoch', '{}'
FROM unnest($1::text[], $2::text[], $3::text[]) AS k(s, u, l)
ORDER BY s, u, l
ON CONFLICT DO NOTHING
"""
_LOCK = """
SELECT p.site, p.subject_id, p.product_line, p.preferences, p.record_id,
       to_char(p.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), p.extra
FROM preference_state p
JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(s, u, l)
    ON p.site = k.s AND p.subject_id = k.u AND p.product_line = k.l
ORDER BY p.site, p.subject_id, p.product_line
FOR UPDATE OF p
"""
_UPDATE = """
UPDATE preference_state p SET preferences = k.p, record_id = k.r, updated_at = k.t, extra = k.e
FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::timestamptz[],
            $7::jsonb[]) AS k(s, u, l, p, r, t, e)
WHERE p.site = k.s AND p.subject_id = k.u AND p.product_line = k.l
"""


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def columns_of(objects: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """The records as one array per column (KeyError/ValueError/TypeError if one is not)."""
    out: list[list[Any]] = [[] for _ in COLUMNS]
    for obj in objects:
        for column, name in zip(out, COLUMNS, strict=True):
            value = obj[name]
            if name == "recorded_at":
                value = datetime.fromisoformat(value)
            elif name in ("preferences", "evidence", "extra"):
                value = _json(value)
            elif value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be text")
            column.append(value)
    return out


def link_columns(objects: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    out: list[list[Any]] = [[] for _ in _LINK_FIELDS]
    for obj in objects:
        for column, name in zip(out, _LINK_FIELDS, strict=True):
            value = obj[name]
            if not isinstance(value, str):
                raise TypeError(f"{name} must be text")
            column.append(datetime.fromisoformat(value) if name == "recorded_at" else value)
    return out


async def write(conn: asyncpg.Connection, records: Sequence[Mapping[str, Any]]) -> None:
    """Store preference and link records and fold the newly stored preference changes into
    the state, in one transaction."""
    links = [o for o in records if kind_of(o) == LINK_KIND]
    objects = [o for o in records if kind_of(o) != LINK_KIND]
    arrays = columns_of(objects)
    link_arrays = link_columns(links)
    async with conn.transaction():
        if links:
            await conn.execute(_LINKS, *link_arrays)
        if not objects:
            return
        stored = {r[0] for r in await conn.fetch(_INSERT, *arrays)}
        fresh = [o for o in objects if o["record_id"] in stored]
        if not fresh:
            return
        keys = sorted({(o["site"], o["subject_id"], o["product_line"]) for o in fresh})
        split = [list(part) for part in zip(*keys, strict=True)]
        await conn.execute(_PLACEHOLDERS, *split)
        states: dict[Key, State] = {}
        for row in await conn.fetch(_LOCK, *split):
            states[(row[0], row[1], row[2])] = State(
                orjson.loads(row[3]), row[4], row[5], orjson.loads(row[6])
            )
        changed = sorted(fold(states, fresh))
        if not changed:
            return
        await conn.execute(
            _UPDATE,
            [k[0] for k in changed],
            [k[1] for k in changed],
            [k[2] for k in changed],
            [orjson.dumps(states[k].preferences).decode() for k in changed],
            [states[k].record_id for k in changed],
            [datetime.fromisoformat(states[k].updated_at) for k in changed],
            [orjson.dumps(states[k].extra).decode() for k in changed],
        )


async def history(conn: asyncpg.Connection, site: str, subject_id: str) -> list[dict[str, Any]]:
    """A subject's preference records, newest first."""
    rows = await conn.fetch(
        f"SELECT {', '.join(COLUMNS)} FROM preference_records "
        "WHERE site = $1 AND subject_id = $2 ORDER BY recorded_at DESC, record_id DESC LIMIT $3",
        site, subject_id, HISTORY_LIMIT,
    )  # fmt: skip
    return [_record_json(row) for row in rows]


async def keyed(
    conn: asyncpg.Connection, site: str, subject_id: str, key: str, since: datetime
) -> dict[str, Any] | None:
    """The subject's first preference record with idempotency key ``key`` since ``since``."""
    columns = ", ".join(COLUMNS)
    row = await first_keyed(conn, "preference_records", columns, site, subject_id, key, since)
    return None if row is None else _record_json(row)


def _record_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as the record's JSON object."""
    data: dict[str, Any] = {"kind": "preference", **dict(row)}
    data["record_id"] = str(row["record_id"])
    data["recorded_at"] = row["recorded_at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for name in ("preferences", "evidence", "extra"):
        data[name] = None if row[name] is None else orjson.loads(row[name])
    return data
