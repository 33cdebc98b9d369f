"""Reads of the audit trail from the embedded SQLite store: the same calls as
gateway/sinks/audit_postgres.py, answered from gateway/sinks/sqlite_audit.py's tables.

One connection per read, in a worker thread; large reads go in batches (constant memory).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from gateway.core import transition_chain as transitions
from gateway.sinks import sqlite_preference_chain
from gateway.sinks.sqlite_audit import record_digest

BATCH = 10_000
T = TypeVar("T")

# The records' nodes: each link with its record (consent or preference) by the store seq
# kept beside the link. The rights nodes go in a walk of their own (_RIGHTS_CHAIN).
_CHAIN = """
    SELECT c.node_id, c.seq, c.kind, c.ref, c.prev_hash, c.hash, c.personal_digest,
           (?1 IS NULL OR c.site = ?1) AS wanted, coalesce(r.body, p.body) AS body
    FROM audit_chain c
    LEFT JOIN consent_records r
        ON c.kind = 'consent' AND r.seq = c.record_seq AND r.record_id = c.ref
    LEFT JOIN preference_records p
        ON c.kind = 'preference' AND p.seq = c.record_seq AND p.record_id = c.ref
    WHERE (?2 IS NULL OR c.recorded_at >= ?2)
      AND (?1 IS NULL OR c.node_id IN (SELECT node_id FROM audit_chain WHERE site = ?1))
      AND (c.node_id < 'rights:' OR c.node_id >= 'rights;')
    ORDER BY c.node_id, c.seq
"""
_RIGHTS_CHAIN = """
    SELECT c.node_id, c.seq, c.kind, c.ref, c.prev_hash, c.hash,
           (?1 IS NULL OR c.site = ?1) AS wanted,
           t.request_id, t.seq AS t_seq, t.site AS t_site, t.from_state, t.to_state, t.actor,
           t.reason, t.at, t.personal_digest AS kept
    FROM audit_chain c
    LEFT JOIN rights_transitions t
        ON t.request_id = substr(c.ref, 1, instr(c.ref, '/') - 1)
       AND t.seq = CAST(substr(c.ref, instr(c.ref, '/') + 1) AS INTEGER)
    WHERE c.node_id >= 'rights:' AND c.node_id < 'rights;'
      AND (?2 IS NULL OR c.recorded_at >= ?2)
      AND (?1 IS NULL OR c.node_id = 'rights:' || ?1)
    ORDER BY c.node_id, c.seq
"""


def _unlinked(table: str, kind: str) -> str:
    """Up to 10 records of one of the store's own record tables with no link (``table`` and
    ``kind`` are constants, never input)."""
    return f"""
    SELECT * FROM (
        SELECT json_extract(r.body, '$.node_id') AS node_id, r.record_id AS ref,
               '{kind}' AS kind
        FROM {table} r
        WHERE (?1 IS NULL OR r.site = ?1) AND (?2 IS NULL OR r.recorded_at >= ?2)
          AND NOT EXISTS (SELECT 1 FROM audit_chain c
                          WHERE c.kind = '{kind}' AND c.ref = r.record_id)
        LIMIT 10)"""


_UNLINKED = (
    _unlinked("consent_records", "consent")
    + "\n    UNION ALL"
    + _unlinked("preference_records", "preference")
)
_RIGHTS_UNLINKED = """
    SELECT 'rights:' || coalesce(t.site, '') AS node_id, t.request_id || '/' || t.seq AS ref,
           'rights' AS kind
    FROM rights_transitions t
    WHERE (?1 IS NULL OR t.site = ?1) AND (?2 IS NULL OR t.at >= ?2)
      AND NOT EXISTS (SELECT 1 FROM audit_chain c
                      WHERE c.kind = 'rights' AND c.ref = t.request_id || '/' || t.seq)
    LIMIT 10
"""
_FILTERS = {
    "region": "(json_extract(body, '$.region_country') = ? OR "
    "json_extract(body, '$.region_country') || '-' || "
    "json_extract(body, '$.region_subdivision') = ?)",
    "rule": "json_extract(body, '$.rule_id') = ?",
    "channel": "json_extract(body, '$.channel') = ?",
    "action": "json_extract(body, '$.action') = ?",
    "subject_id": "subject_id = ?",
}


def _text(moment: datetime | None) -> str | None:
    """A time as the store's fixed-width RFC 3339 UTC text (text order is time order)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _day(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _link(row: sqlite3.Row) -> dict[str, Any]:
    """A chain row with the digest its record gives now (None: the record is gone)."""
    out = {k: row[k] for k in ("node_id", "seq", "kind", "ref", "prev_hash", "hash")}
    out["wanted"] = bool(row["wanted"])
    body = row["body"]
    digest = sqlite_preference_chain.record_digest if row["kind"] == "preference" else record_digest
    out["digest"] = (
        digest(orjson.loads(body), bytes(row["personal_digest"]))
        if body is not None and out["wanted"]
        else None
    )
    return out


def _rights_link(row: sqlite3.Row) -> dict[str, Any]:
    out = {k: row[k] for k in ("node_id", "seq", "kind", "ref", "prev_hash", "hash")}
    out["wanted"] = bool(row["wanted"])
    out["digest"] = transitions.row_digest(row) if out["wanted"] else None
    return out


class SqliteAuditReader:
    """One connection for one audit read (a walk, an export, a report)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    async def __aenter__(self) -> SqliteAuditReader:
        self._conn = await asyncio.to_thread(self._connect)
        return self

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise FileNotFoundError(f"no embedded store at {self.path}")
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.to_thread(conn.close)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise RuntimeError("use the reader as `async with`")
        return await asyncio.to_thread(fn, self._conn)

    async def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self._run(lambda c: c.execute(sql, tuple(args)).fetchall())

    async def _stream(
        self, sql: str, args: Sequence[Any], convert: Callable[[sqlite3.Row], dict[str, Any]]
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Batches of one read transaction (a consistent snapshot of the WAL store)."""
        await self._run(lambda c: c.execute("BEGIN"))
        try:
            cursor = await self._run(lambda c: c.execute(sql, tuple(args)))
            while batch := await self._run(lambda c: [convert(r) for r in cursor.fetchmany(BATCH)]):
                yield batch
        finally:
            await self._run(lambda c: c.execute("COMMIT"))

    async def chain(self, site: str | None, since: datetime | None) -> AsyncIterator[list[Any]]:
        """Batches of links in (node, seq) order: the records' nodes, then the rights nodes."""
        async for batch in self._stream(_CHAIN, (site, _text(since)), _link):
            yield batch
        if await self.rights_state() == "chained":
            async for batch in self._stream(_RIGHTS_CHAIN, (site, _text(since)), _rights_link):
                yield batch

    async def rights_state(self) -> str:
        """``absent`` (no rights tables), ``unchained`` (before the chain: the rights store
        migrates them when it opens) or ``chained``."""
        columns = await self._fetch("SELECT name FROM pragma_table_info('rights_transitions')")
        names = {r["name"] for r in columns}
        return "chained" if "personal_digest" in names else "unchained" if names else "absent"

    async def unlinked(self, site: str | None, since: datetime | None) -> list[Any]:
        found: list[Any] = await self._fetch(_UNLINKED, (site, _text(since)))
        if await self.rights_state() == "chained":
            found += await self._fetch(_RIGHTS_UNLINKED, (site, _text(since)))
        return found

    async def heads(self) -> dict[str, tuple[int, bytes]]:
        rows = await self._fetch("SELECT node_id, seq, hash FROM audit_heads")
        return {r["node_id"]: (r["seq"], bytes(r["hash"])) for r in rows}

    async def links_at(self, wanted: Sequence[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
        out: dict[tuple[str, int], bytes] = {}
        for node, seq in wanted:
            rows = await self._fetch(
                "SELECT hash FROM audit_chain WHERE node_id = ? AND seq = ?", (node, seq)
            )
            if rows:
                out[(node, seq)] = bytes(rows[0]["hash"])
        return out

    async def retention(self) -> None:
        """No retention here: the embedded store keeps one table (`store retention` is
        PostgreSQL's)."""
        return None

    async def checkpoints(self) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT checkpoint_id, taken_at, heads, signature FROM audit_checkpoints "
            "ORDER BY checkpoint_id"
        )
        return [{**dict(r), "taken_at": datetime.fromisoformat(r["taken_at"])} for r in rows]

    async def add_checkpoint(self, heads: Mapping[str, Any], signature: str) -> int:
        taken = datetime.now(UTC).isoformat()
        text = orjson.dumps(heads).decode()
        return await self._run(lambda c: int(c.execute(
            "INSERT INTO audit_checkpoints (taken_at, heads, signature) VALUES (?, ?, ?)",
            (taken, text, signature),
        ).lastrowid or 0))  # fmt: skip

    def records(
        self,
        site: str,
        start: datetime | None,
        end: datetime | None,
        filters: Mapping[str, str],
    ) -> AsyncIterator[list[dict[str, Any]]]:
        clauses, args = ["site = ?"], [site]
        for bound, op in ((start, ">="), (end, "<")):
            if bound is not None:
                clauses.append(f"recorded_at {op} ?")
                args.append(str(_text(bound)))
        for name, value in filters.items():
            clauses.append(_FILTERS[name])
            args += [value] * _FILTERS[name].count("?")
        sql = (
            f"SELECT body FROM consent_records WHERE {' AND '.join(clauses)} "
            "ORDER BY recorded_at, record_id"
        )
        return self._stream(sql, args, lambda r: dict(orjson.loads(r["body"])))

    async def subject_links(self, refs: Sequence[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for ref in refs:
            rows = await self._fetch(
                "SELECT c.node_id, c.seq, c.kind, c.ref, c.prev_hash, c.hash, c.personal_digest,"
                " 1 AS wanted, r.body FROM audit_chain c JOIN consent_records r "
                "ON r.seq = c.record_seq AND r.record_id = c.ref "
                "WHERE c.kind = 'consent' AND c.ref = ?",
                (ref,),
            )
            out += [_link(r) for r in rows]
        return out

    async def version_texts(self, site: str, versions: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for version in versions:
            for r in await self._fetch(
                "SELECT banner_version, consent_revision, texts, published_at "
                "FROM banner_versions WHERE site = ? AND banner_version = ?",
                (site, version),
            ):
                out[version] = {**dict(r), "texts": orjson.loads(r["texts"])}
        return out

    async def _grouped(
        self, select: str, table: str, site: str, start: date | None, end: date | None,
        group: str, extra: str = "",
    ) -> list[dict[str, Any]]:  # fmt: skip
        rows = await self._fetch(
            f"SELECT {select} FROM {table} WHERE site = ? AND (? IS NULL OR day >= ?) "
            f"AND (? IS NULL OR day < ?) {extra} GROUP BY {group} ORDER BY {group}",
            (site, _day(start), _day(start), _day(end), _day(end)),
        )
        return [dict(r) for r in rows]

    async def consent_rollup(
        self, site: str, start: date | None, end: date | None, dims: Sequence[str]
    ) -> list[dict[str, Any]]:
        group = ", ".join([*dims, "action"])
        return await self._grouped(f"{group}, sum(n) AS n", "consent_rollup", site, start, end,
                                   group)  # fmt: skip

    async def purpose_rollup(
        self, site: str, start: date | None, end: date | None, dims: Sequence[str]
    ) -> list[dict[str, Any]]:
        group = ", ".join([*dims, "purpose"])
        select = f"{group}, sum(granted) AS granted, sum(n) AS n"
        return await self._grouped(select, "consent_purpose_rollup", site, start, end, group)

    async def version_rates(self, site: str) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT region, banner_version, min(day) AS first_day, "
            "coalesce(sum(CASE WHEN action = 'accept_all' THEN n END), 0) AS accepted, "
            "sum(n) AS n FROM consent_rollup WHERE site = ? "
            "GROUP BY region, banner_version ORDER BY region, first_day, banner_version",
            (site,),
        )
        return [dict(r) for r in rows]

    async def rights_year(self, site: str, year: int) -> list[tuple[str, str, str, str | None]]:
        present = await self._fetch(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rights_requests'"
        )
        if not present:
            raise LookupError("rights_requests")
        rows = await self._fetch(
            "SELECT r.type, r.state, r.received_at, "
            "(SELECT min(t.at) FROM rights_transitions t WHERE t.request_id = r.request_id "
            " AND t.to_state IN ('completed', 'denied')) AS closed_at "
            "FROM rights_requests r WHERE r.site = ? AND r.received_at >= ? "
            "AND r.received_at < ?",
            (site, f"{year:04d}-01-01", f"{year + 1:04d}-01-01"),
        )
        return [(r["type"], r["state"], r["received_at"], r["closed_at"]) for r in rows]

    async def add_impressions(self, day: date, counts: Sequence[tuple[Any, ...]]) -> None:
        if not counts:
            return
        rows = [(s, day.isoformat(), v, r, g, lang, c, n) for s, v, r, g, lang, c, n in counts]

        def add(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO banner_impressions AS b VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (site, day, banner_version, rule_id, region, language, channel) "
                    "DO UPDATE SET n = b.n + excluded.n",
                    sorted(rows),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._run(add)

    async def impressions(
        self, site: str, start: date | None, end: date | None, dims: Sequence[str]
    ) -> list[dict[str, Any]]:
        group = ", ".join(dims) if dims else "site"
        return await self._grouped(f"{group}, sum(n) AS n", "banner_impressions", site, start,
                                   end, group)  # fmt: skip
