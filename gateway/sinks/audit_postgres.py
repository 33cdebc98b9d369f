"""Reads of the audit trail from PostgreSQL: chain walk, exports, rollups, a subject's records.

Large reads go through server-side cursors in batches, so a walk or an export of any size
holds one batch in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import asyncpg
import orjson

from gateway.core import transition_chain as transitions
from gateway.sinks.postgres import COLUMNS

BATCH = 10_000

# A record's link is checked against its digest, or against the digest kept at its erasure
# (gateway/sinks/postgres_audit.py); an erasure link against the kept digest and the erased
# record as it is now.
_CHAIN = """
    SELECT c.node_id, c.seq, c.kind, c.ref, c.prev_hash, c.hash,
           $1::text IS NULL OR c.site = $1 AS wanted,
           CASE WHEN NOT ($1::text IS NULL OR c.site = $1) THEN NULL
                WHEN c.kind = 'preference' THEN
                    CASE WHEN p.record_id IS NULL THEN NULL
                         ELSE coalesce(e.digest, audit_preference_digest(p)) END
                WHEN c.kind = 'erasure' AND p.record_id IS NOT NULL THEN
                    CASE WHEN e.ref IS NULL THEN NULL
                         ELSE sha256(e.digest || audit_preference_digest(p)) END
                WHEN r.record_id IS NULL THEN NULL
                WHEN c.kind = 'consent' THEN coalesce(e.digest, audit_consent_digest(r))
                WHEN e.ref IS NULL THEN NULL
                ELSE sha256(e.digest || audit_consent_digest(r)) END AS digest
    FROM audit_chain c
    LEFT JOIN consent_records r
        ON c.kind IN ('consent', 'erasure') AND r.record_id = c.ref::uuid
    LEFT JOIN audit_erasures e
        ON c.kind IN ('consent', 'preference', 'erasure') AND e.ref = c.ref
    LEFT JOIN preference_records p
        ON c.kind IN ('preference', 'erasure') AND p.record_id = c.ref::uuid
    WHERE ($2::timestamptz IS NULL OR c.recorded_at >= $2)
      AND ($1::text IS NULL OR c.node_id IN (SELECT node_id FROM audit_chain WHERE site = $1))
      AND (c.node_id < 'rights:' OR c.node_id >= 'rights;')
    ORDER BY c.node_id, c.seq
"""
# The rights nodes (one per site, gateway/sinks/rights_chain.py): each link with its
# transition's columns; the digest is computed in Python (gateway/core/transition_chain.py).
_RIGHTS_CHAIN = """
    SELECT c.node_id, c.seq, c.kind, c.ref, c.prev_hash, c.hash,
           $1::text IS NULL OR c.site = $1 AS wanted,
           t.request_id, t.seq AS t_seq, t.site AS t_site, t.from_state, t.to_state, t.actor,
           t.reason, t.at, t.personal_digest AS kept
    FROM audit_chain c
    LEFT JOIN rights_transitions t
        ON t.request_id = split_part(c.ref, '/', 1) AND t.seq::text = split_part(c.ref, '/', 2)
    WHERE c.node_id >= 'rights:' AND c.node_id < 'rights;'
      AND ($2::timestamptz IS NULL OR c.recorded_at >= $2)
      AND ($1::text IS NULL OR c.node_id = 'rights:' || $1)
    ORDER BY c.node_id, c.seq
"""
_RIGHTS_UNLINKED = """
    SELECT 'rights:' || coalesce(t.site, '') AS node_id, t.request_id || '/' || t.seq AS ref,
           'rights' AS kind
    FROM rights_transitions t
    WHERE ($1::text IS NULL OR t.site = $1) AND ($2::timestamptz IS NULL OR t.at::timestamptz >= $2)
      AND NOT EXISTS (SELECT 1 FROM audit_chain c
                      WHERE c.kind = 'rights' AND c.ref = t.request_id || '/' || t.seq)
    LIMIT 10
"""
_RIGHTS_STATE = """
    SELECT to_regclass('rights_transitions') IS NOT NULL,
           EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'rights_transitions'
                     AND column_name = 'personal_digest')
"""
_UNLINKED = """
    (SELECT r.node_id, r.record_id::text AS ref, 'consent' AS kind FROM consent_records r
     WHERE ($1::text IS NULL OR r.site = $1) AND ($2::timestamptz IS NULL OR r.recorded_at >= $2)
       AND NOT EXISTS (SELECT 1 FROM audit_chain c
                       WHERE c.kind = 'consent' AND c.ref = r.record_id::text)
     LIMIT 10)
    UNION ALL
    (SELECT p.node_id, p.record_id::text AS ref, 'preference' AS kind FROM preference_records p
     WHERE ($1::text IS NULL OR p.site = $1) AND ($2::timestamptz IS NULL OR p.recorded_at >= $2)
       AND NOT EXISTS (SELECT 1 FROM audit_chain c
                       WHERE c.kind = 'preference' AND c.ref = p.record_id::text)
     LIMIT 10)
"""
# Record columns as the export gives them: timestamps in RFC 3339 UTC, ids as text.
_EXPORT_COLS = ", ".join(
    {
        "recorded_at": "to_char(recorded_at AT TIME ZONE 'UTC', "
        '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\') AS recorded_at',
        "record_id": "record_id::text AS record_id",
        "withdraws": "withdraws::text AS withdraws",
    }.get(c, c)
    for c in COLUMNS
)
FILTERS = ("region", "rule", "channel", "action", "subject_id")


def _where(site: str, start: datetime | None, end: datetime | None, filters: Mapping[str, str]
           ) -> tuple[str, list[Any]]:  # fmt: skip
    clauses: list[str] = ["site = $1"]
    args: list[Any] = [site]
    if start is not None:
        args.append(start)
        clauses.append(f"recorded_at >= ${len(args)}")
    if end is not None:
        args.append(end)
        clauses.append(f"recorded_at < ${len(args)}")
    for name, value in filters.items():
        args.append(value)
        n = len(args)
        clauses.append({
            "region": f"(region_country = ${n} OR region_country || '-' || "
                      f"region_subdivision = ${n})",
            "rule": f"rule_id = ${n}",
            "channel": f"channel = ${n}",
            "action": f"action = ${n}",
            "subject_id": f"subject_id = ${n}",
        }[name])  # fmt: skip
    return " AND ".join(clauses), args


def _rights_link(row: asyncpg.Record) -> dict[str, Any]:
    out = {k: row[k] for k in ("node_id", "seq", "kind", "ref", "prev_hash", "hash", "wanted")}
    out["digest"] = transitions.row_digest(row) if row["wanted"] else None
    return out


def _plain(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    for key in ("choices", "signals"):
        if isinstance(out.get(key), str):
            out[key] = orjson.loads(out[key])
    return out


class PostgresAuditReader:
    """One connection for one audit read (a walk, an export, a report)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> PostgresAuditReader:
        self._conn = await asyncpg.connect(self.dsn, timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> asyncpg.Connection:
        if self._conn is None:
            raise RuntimeError("use the reader as `async with`")
        return self._conn

    async def _stream(self, sql: str, args: Sequence[Any]) -> AsyncIterator[list[asyncpg.Record]]:
        async with self.conn.transaction(readonly=True):
            cursor = await self.conn.cursor(sql, *args)
            while rows := await cursor.fetch(BATCH):
                yield rows

    async def chain(
        self, site: str | None, since: datetime | None
    ) -> AsyncIterator[list[Mapping[str, Any]]]:
        """Batches of links in (node, seq) order: the records' nodes, then the rights nodes
        (their transitions' digests computed here)."""
        async for rows in self._stream(_CHAIN, (site, since)):
            yield rows
        if await self.rights_state() == "chained":
            async for rows in self._stream(_RIGHTS_CHAIN, (site, since)):
                yield [_rights_link(r) for r in rows]

    async def rights_state(self) -> str:
        """``absent`` (no rights tables), ``unchained`` (rights schema before the chain: the
        rights store migrates it when it opens) or ``chained``."""
        present, chained = await self.conn.fetchrow(_RIGHTS_STATE)
        return "chained" if chained else "unchained" if present else "absent"

    async def unlinked(self, site: str | None, since: datetime | None) -> list[Mapping[str, Any]]:
        found: list[Mapping[str, Any]] = list(await self.conn.fetch(_UNLINKED, site, since))
        if await self.rights_state() == "chained":
            found += await self.conn.fetch(_RIGHTS_UNLINKED, site, since)
        return found

    async def heads(self) -> dict[str, tuple[int, bytes]]:
        rows = await self.conn.fetch("SELECT node_id, seq, hash FROM audit_heads")
        return {r["node_id"]: (r["seq"], bytes(r["hash"])) for r in rows}

    async def links_at(self, wanted: Sequence[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
        rows = await self.conn.fetch(
            "SELECT c.node_id, c.seq, c.hash FROM audit_chain c "
            "JOIN unnest($1::text[], $2::bigint[]) AS w(n, s) ON c.node_id = w.n AND c.seq = w.s",
            [w[0] for w in wanted], [w[1] for w in wanted],
        )  # fmt: skip
        return {(r["node_id"], r["seq"]): bytes(r["hash"]) for r in rows}

    async def checkpoints(self) -> list[asyncpg.Record]:
        return list(
            await self.conn.fetch(
                "SELECT checkpoint_id, taken_at, heads, signature FROM audit_checkpoints "
                "ORDER BY checkpoint_id"
            )
        )

    async def retention(self) -> asyncpg.Record | None:
        """The last retention checkpoint (None: no retention yet, or a store before it)."""
        if not await self.conn.fetchval("SELECT to_regclass('consent_retention') IS NOT NULL"):
            return None
        row: asyncpg.Record | None = await self.conn.fetchrow(
            "SELECT retention_id, taken_at, retained_before, bases, signature "
            "FROM consent_retention ORDER BY retention_id DESC LIMIT 1"
        )
        return row

    async def add_checkpoint(self, heads: Mapping[str, Any], signature: str) -> int:
        return int(
            await self.conn.fetchval(
                "INSERT INTO audit_checkpoints (heads, signature) VALUES ($1::jsonb, $2) "
                "RETURNING checkpoint_id",
                orjson.dumps(heads).decode(),
                signature,
            )
        )

    def records(
        self,
        site: str,
        start: datetime | None,
        end: datetime | None,
        filters: Mapping[str, str],
    ) -> AsyncIterator[list[dict[str, Any]]]:
        where, args = _where(site, start, end, filters)
        sql = (
            f"SELECT {_EXPORT_COLS} FROM consent_records WHERE {where} "
            "ORDER BY recorded_at, record_id"
        )

        async def batches() -> AsyncIterator[list[dict[str, Any]]]:
            async for rows in self._stream(sql, args):
                yield [_plain(r) for r in rows]

        return batches()

    async def subject_links(self, refs: Sequence[str]) -> list[asyncpg.Record]:
        return list(
            await self.conn.fetch(
                "SELECT c.node_id, c.seq, c.kind, c.ref, c.prev_hash, c.hash, "
                "coalesce(e.digest, audit_consent_digest(r)) AS digest FROM audit_chain c "
                "JOIN consent_records r ON r.site = c.site AND r.recorded_at = c.recorded_at "
                "AND r.record_id = c.ref::uuid "
                "LEFT JOIN audit_erasures e ON e.ref = c.ref "
                "WHERE c.kind = 'consent' AND c.ref = ANY($1::text[]) ORDER BY c.node_id, c.seq",
                list(refs),
            )
        )

    async def version_texts(self, site: str, versions: Sequence[str]) -> dict[str, Any]:
        rows = await self.conn.fetch(
            "SELECT banner_version, consent_revision, texts, published_at FROM banner_versions "
            "WHERE site = $1 AND banner_version = ANY($2::text[])",
            site, list(versions),
        )  # fmt: skip
        return {
            r["banner_version"]: {
                "banner_version": r["banner_version"],
                "consent_revision": r["consent_revision"],
                "texts": orjson.loads(r["texts"]),
                "published_at": r["published_at"].isoformat(),
            }
            for r in rows
        }

    async def consent_rollup(
        self, site: str, start: date | None, end: date | None, dims: Sequence[str]
    ) -> list[asyncpg.Record]:
        cols = ", ".join(dims)
        group = f"{cols}, action" if dims else "action"
        return list(
            await self.conn.fetch(
                f"SELECT {group}, sum(n)::bigint AS n FROM consent_rollup "
                "WHERE site = $1 AND ($2::date IS NULL OR day >= $2) "
                f"AND ($3::date IS NULL OR day < $3) GROUP BY {group} ORDER BY {group}",
                site,
                start,
                end,
            )
        )

    async def purpose_rollup(
        self, site: str, start: date | None, end: date | None, dims: Sequence[str]
    ) -> list[asyncpg.Record]:
        group = ", ".join([*dims, "purpose"])
        return list(
            await self.conn.fetch(
                f"SELECT {group}, sum(granted)::bigint AS granted, sum(n)::bigint AS n "
                "FROM consent_purpose_rollup WHERE site = $1 "
                "AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day < $3) "
                f"GROUP BY {group} ORDER BY {group}",
                site,
                start,
                end,
            )
        )

    async def version_rates(self, site: str) -> list[asyncpg.Record]:
        """Per region and banner version: first day, accept_all count and total."""
        return list(
            await self.conn.fetch(
                "SELECT region, banner_version, min(day) AS first_day, "
                "coalesce(sum(n) FILTER (WHERE action = 'accept_all'), 0)::bigint AS accepted, "
                "sum(n)::bigint AS n FROM consent_rollup WHERE site = $1 "
                "GROUP BY region, banner_version ORDER BY region, first_day, banner_version",
                site,
            )
        )

    async def rights_year(self, site: str, year: int) -> list[tuple[str, str, str, str | None]]:
        """Requests received in ``year`` with their first final transition (rights tables of
        gateway/rights/); LookupError when this store has no rights tables."""
        present = await self.conn.fetchval("SELECT to_regclass('rights_requests') IS NOT NULL")
        if not present:
            raise LookupError("rights_requests")
        rows = await self.conn.fetch(
            "SELECT r.type, r.state, r.received_at, "
            "(SELECT min(t.at) FROM rights_transitions t WHERE t.request_id = r.request_id "
            " AND t.to_state IN ('completed', 'denied')) AS closed_at "
            "FROM rights_requests r WHERE r.site = $1 AND r.received_at >= $2 "
            "AND r.received_at < $3",
            site, f"{year:04d}-01-01", f"{year + 1:04d}-01-01",
        )  # fmt: skip
        return [(r["type"], r["state"], r["received_at"], r["closed_at"]) for r in rows]

    async def add_impressions(self, day: date, counts: Sequence[tuple[Any, ...]]) -> None:
        """Add (site, version, rule, region, language, channel, n) rows to ``day``'s counts;
        in key order, so concurrent nodes' flushes cannot deadlock."""
        if not counts:
            return
        cols = list(zip(*sorted(counts), strict=True))
        await self.conn.execute(
            "INSERT INTO banner_impressions AS b "
            "SELECT s, $1, v, r, g, l, c, n FROM unnest($2::text[], $3::text[], $4::text[], "
            "$5::text[], $6::text[], $7::text[], $8::bigint[]) AS u(s, v, r, g, l, c, n) "
            "ON CONFLICT (site, day, banner_version, rule_id, region, language, channel) "
            "DO UPDATE SET n = b.n + excluded.n",
            day, *(list(c) for c in cols),
        )  # fmt: skip

    async def impressions(
        self, site: str, start: date | None, end: date | None, dims: Sequence[str]
    ) -> list[asyncpg.Record]:
        group = ", ".join(dims) if dims else "site"
        return list(
            await self.conn.fetch(
                f"SELECT {group}, sum(n)::bigint AS n FROM banner_impressions WHERE site = $1 "
                "AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day < $3) "
                f"GROUP BY {group} ORDER BY {group}",
                site,
                start,
                end,
            )
        )
