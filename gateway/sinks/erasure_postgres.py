"""Erasure and correction across the PostgreSQL store's tables: a subject's records, identity
links and preference states (the rights store's ``erase``, ``relink``, ``tombstones``), each
on a connection the caller holds in a transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from gateway.sinks import postgres
from gateway.sinks.rights import (
    ERASED_FIELDS,
    PREFERENCE_ERASED_FIELDS,
    Erasure,
    Relink,
    content_hash,
    tombstone,
)


async def erase(
    conn: asyncpg.Connection, site: str, subject_ids: Sequence[str], request_id: str, at: str
) -> Erasure:
    """Blank the subjects' personal fields (a tombstone keeps each record's content hash),
    delete their identity links and preference extras."""
    erased = orjson.dumps(sorted(ERASED_FIELDS)).decode()
    subjects = list(subject_ids)
    rows = await conn.fetch(
        f"SELECT {postgres._COLS} FROM consent_records "
        "WHERE site = $1 AND subject_id = ANY($2) FOR UPDATE",
        site, subjects,
    )  # fmt: skip
    tombs = []
    for row in rows:
        data = postgres._record_json(row)
        if all(data.get(k) == v for k, v in ERASED_FIELDS.items()):
            continue
        tombs.append(
            (site, data["record_id"], data["subject_id"], content_hash(data), erased, at,
             request_id)
        )  # fmt: skip
    if tombs:
        await conn.executemany(
            "INSERT INTO erasure_tombstones VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) "
            "ON CONFLICT DO NOTHING",
            tombs,
        )
        await conn.execute(
            "UPDATE consent_records SET ip_truncated = NULL, user_agent = '', "
            "page_url = '', idempotency_key = NULL "
            "WHERE site = $1 AND subject_id = ANY($2) AND record_id = ANY($3::uuid[])",
            site, subjects, [t[1] for t in tombs],
        )  # fmt: skip
    links = await conn.execute(
        "DELETE FROM identity_links WHERE site = $1 AND subject_id = ANY($2)",
        site, subjects,
    )  # fmt: skip
    states = await conn.execute(
        "UPDATE preference_state SET extra = '{}'::jsonb "
        "WHERE site = $1 AND subject_id = ANY($2) AND extra != '{}'::jsonb",
        site, subjects,
    )  # fmt: skip
    # The links' history goes too, and the request facts of preference changes (a trigger
    # keeps their chain verifiable, as for consents: postgres_audit.py).
    await conn.execute(
        "DELETE FROM identity_link_records WHERE site = $1 AND subject_id = ANY($2)",
        site, subjects,
    )  # fmt: skip
    fields = enumerate(PREFERENCE_ERASED_FIELDS, 3)
    blank = ", ".join(f"{name} = ${n}" for n, name in fields)
    await conn.execute(
        f"UPDATE preference_records SET {blank} WHERE site = $1 "
        "AND subject_id = ANY($2) AND (ip_truncated IS NOT NULL OR user_agent <> '' "
        "OR idempotency_key IS NOT NULL)",
        site, subjects, *PREFERENCE_ERASED_FIELDS.values(),
    )  # fmt: skip
    return Erasure(len(tombs), int(links.split()[-1]), int(states.split()[-1]))


async def relink(conn: asyncpg.Connection, r: Relink) -> None:
    """Correction: drop the subjects' links to ``unlink``, add ``(type, hash)`` links."""
    await conn.execute(
        "DELETE FROM identity_links WHERE site = $1 AND subject_id = ANY($2) "
        "AND identity_hash = ANY($3)",
        r.site, list(r.subject_ids), list(r.unlink),
    )  # fmt: skip
    rows = [(r.site, h, s, t, r.at) for s in r.subject_ids for t, h in r.link]
    if rows:
        await conn.executemany(
            "INSERT INTO identity_links VALUES ($1, $2, $3, $4, $5::timestamptz, 'rights') "
            "ON CONFLICT DO NOTHING",
            [(a, b, c, d, datetime.fromisoformat(e)) for a, b, c, d, e in rows],
        )


async def tombstones(conn: asyncpg.Connection, site: str, subject_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT record_id, content_hash, erased_fields, erased_at, request_id "
        "FROM erasure_tombstones WHERE site = $1 AND subject_id = $2 ORDER BY record_id",
        site, subject_id,
    )  # fmt: skip
    return [tombstone(r) for r in rows]
