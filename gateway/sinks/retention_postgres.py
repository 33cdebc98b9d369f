"""The SQL of retention in the PostgreSQL store: which month partitions have expired, what
they hold that must be kept, the audit chain links that retire with them, and the drop.

Everything happens in one transaction that holds ``consent_records`` exclusively (writers
wait, they do not fail): the plan, the signed retention checkpoint and the drop commit
together or not at all. gateway/audit/retention.py decides and signs; this module only
reads and writes.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import asyncpg
import orjson

RETAINED = "consent_records_retained"
_MONTH = re.compile(r"consent_records_p(\d{4})(\d{2})")


def _bases(first: int) -> str:
    """Each node's retire point as rows (n, s), from parameters ``$first`` and the next."""
    return f"unnest(${first}::text[], ${first + 1}::bigint[]) AS b(n, s)"


_BASES = _bases(3)


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime
    end: datetime
    rows: int = 0


def _month_end(year: int, month: int) -> datetime:
    y, m = (year + 1, 1) if month == 12 else (year, month + 1)
    return datetime(y, m, 1, tzinfo=UTC)


class RetentionTx:
    """One connection in one transaction; committed on leaving unless ``rollback`` is set
    (a dry run) or the block raised."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.rollback = False
        self._conn: asyncpg.Connection | None = None
        self._tx: Any = None

    async def __aenter__(self) -> RetentionTx:
        self._conn = await asyncpg.connect(self.dsn, timeout=10, command_timeout=None)
        self._tx = self._conn.transaction()
        await self._tx.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._conn = self.conn, None
        try:
            if kind is None and not self.rollback:
                await self._tx.commit()
            else:
                await self._tx.rollback()
        finally:
            await conn.close()

    @property
    def conn(self) -> asyncpg.Connection:
        if self._conn is None:
            raise RuntimeError("use RetentionTx as `async with`")
        return self._conn

    async def lock(self) -> None:
        """Hold the records (and so the chain, which only their inserts extend) still."""
        await self.conn.execute("SET LOCAL lock_timeout = '60s'")
        await self.conn.execute("LOCK TABLE consent_records IN ACCESS EXCLUSIVE MODE")
        await self.conn.execute("LOCK TABLE audit_heads IN EXCLUSIVE MODE")

    async def months(self, *, count_rows: bool) -> list[Partition]:
        """The month partitions, oldest first (with their row counts if asked)."""
        names = await self.conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'consent_records'::regclass"
        )
        found = []
        for r in names:
            m = _MONTH.fullmatch(r["relname"])
            if m is None:
                continue
            y, mo = int(m[1]), int(m[2])
            rows = 0
            if count_rows:
                rows = int(await self.conn.fetchval(f'SELECT count(*) FROM "{r["relname"]}"'))
            found.append(Partition(r["relname"], datetime(y, mo, 1, tzinfo=UTC),
                                   _month_end(y, mo), rows))  # fmt: skip
        return sorted(found, key=lambda p: p.start)

    async def previous(self) -> tuple[datetime | None, dict[str, Any]]:
        """The last retention's bound and its bases (none yet: ``None, {}``)."""
        row = await self.conn.fetchrow(
            "SELECT retained_before, bases FROM consent_retention "
            "ORDER BY retention_id DESC LIMIT 1"
        )
        if row is None:
            return None, {}
        return row["retained_before"], dict(orjson.loads(row["bases"]))

    async def retire_points(self, bound: datetime) -> dict[str, tuple[int, bytes | None]]:
        """Per node: the last link before the first one of a record from ``bound`` on (every
        link up to it is of an older record), with its hash if the link is still there."""
        rows = await self.conn.fetch(
            "SELECT h.node_id, h.seq AS head, (SELECT min(c.seq) FROM audit_chain c "
            "WHERE c.node_id = h.node_id AND c.recorded_at >= $1) AS first_live "
            "FROM audit_heads h",
            bound,
        )
        points: dict[str, tuple[int, bytes | None]] = {}
        for r in rows:
            seq = r["first_live"] - 1 if r["first_live"] is not None else r["head"]
            if seq <= 0:
                continue
            h = await self.conn.fetchval(
                "SELECT hash FROM audit_chain WHERE node_id = $1 AND seq = $2", r["node_id"], seq
            )
            points[r["node_id"]] = (seq, None if h is None else bytes(h))
        return points

    async def keep(self, start: datetime | None, bound: datetime, seqs: Mapping[str, int]) -> int:
        """Copy aside what the expired months hold and must keep: each subject's latest
        record, and every record whose chain link is not retired. Their count."""
        # In steps over small analysed tables, so that no plan can go quadratic: the retired
        # links of the expired months (a range of each node's primary key), then the
        # records not among them or holding a latest state.
        await self.conn.execute(
            "CREATE TEMP TABLE retention_retired ON COMMIT DROP AS "
            f"SELECT c.ref FROM {_BASES} JOIN audit_chain c ON c.node_id = b.n AND c.seq <= b.s "
            "WHERE c.kind = 'consent' AND c.recorded_at >= $1 AND c.recorded_at < $2",
            start or datetime.min.replace(tzinfo=UTC), bound, *_columns(seqs),
        )  # fmt: skip
        # A record erased since keeps its record while its erasure link is not retired.
        await self.conn.execute(
            f"DELETE FROM retention_retired x USING audit_chain e JOIN {_bases(1)} "
            "ON e.node_id = b.n WHERE e.kind = 'erasure' AND e.ref = x.ref AND e.seq > b.s",
            *_columns(seqs),
        )
        await self.conn.execute("CREATE INDEX ON retention_retired (ref)")
        await self.conn.execute("ANALYZE retention_retired")
        await self.conn.execute(
            "CREATE TEMP TABLE retention_keep ON COMMIT DROP AS "
            "SELECT r.* FROM consent_records r "
            "WHERE r.recorded_at >= $1 AND r.recorded_at < $2 AND ("
            " NOT EXISTS (SELECT 1 FROM retention_retired x WHERE x.ref = r.record_id::text)"
            " OR EXISTS (SELECT 1 FROM consent_latest l WHERE l.site = r.site "
            "  AND l.subject_id = r.subject_id AND l.record_id = r.record_id))",
            start or datetime.min.replace(tzinfo=UTC), bound,
        )  # fmt: skip
        await self.conn.execute("CREATE INDEX ON retention_keep (record_id)")
        await self.conn.execute("ANALYZE retention_keep")
        return int(await self.conn.fetchval("SELECT count(*) FROM retention_keep"))

    async def retire_links(self, seqs: Mapping[str, int]) -> int:
        """Delete the retired links (consent and erasure) of the records about to go, and
        the digests kept at their erasure; how many links."""
        dropped = (
            "SELECT x.ref FROM retention_retired x WHERE NOT EXISTS "
            "(SELECT 1 FROM retention_keep k WHERE k.record_id = x.ref::uuid)"
        )
        status = await self.conn.execute(
            f"DELETE FROM audit_chain c USING {_bases(1)} "
            "WHERE c.node_id = b.n AND c.seq <= b.s AND c.kind IN ('consent', 'erasure') "
            f"AND c.ref IN ({dropped})",
            *_columns(seqs),
        )
        await self.conn.execute(f"DELETE FROM audit_erasures WHERE ref IN ({dropped})")
        return int(status.split()[-1])

    async def retired(self, seqs: Mapping[str, int]) -> AsyncIterator[tuple[str, int, bytes]]:
        """The links retention keeps below each node's retire point, in (node, seq) order."""
        cursor = self.conn.cursor(
            "SELECT c.node_id, c.seq, c.hash FROM audit_chain c "
            f"JOIN {_bases(1)} ON c.node_id = b.n "
            "WHERE c.seq <= b.s ORDER BY c.node_id, c.seq",
            *_columns(seqs),
        )
        async for r in cursor:
            yield r["node_id"], r["seq"], bytes(r["hash"])

    async def record(
        self,
        cutoff: datetime,
        bound: datetime,
        dropped: Sequence[str],
        kept: int,
        bases: Mapping[str, Any],
        signature: str,
    ) -> int:
        """The signed retention checkpoint, written before anything is dropped."""
        return int(
            await self.conn.fetchval(
                "INSERT INTO consent_retention "
                "(cutoff, retained_before, dropped, kept, bases, signature) "
                "VALUES ($1, $2, $3, $4, $5::jsonb, $6) RETURNING retention_id",
                cutoff,
                bound,
                list(dropped),
                kept,
                orjson.dumps(bases).decode(),
                signature,
            )
        )

    async def drop(self, expired: Sequence[Partition], bound: datetime) -> None:
        """Drop the expired months whole; the kept rows join the retained partition, which
        then covers everything before ``bound``."""
        attached = await self.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = "
            "'consent_records'::regclass AND inhrelid = to_regclass($1))",
            RETAINED,
        )
        if attached:
            await self.conn.execute(f"ALTER TABLE consent_records DETACH PARTITION {RETAINED}")
        else:
            await self.conn.execute(
                f"CREATE TABLE {RETAINED} (LIKE consent_records INCLUDING DEFAULTS)"
            )
        for p in expired:
            await self.conn.execute(f'DROP TABLE "{p.name}"')
        await self.conn.execute(f"INSERT INTO {RETAINED} SELECT * FROM retention_keep")
        end = bound.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")
        await self.conn.execute(
            f"ALTER TABLE consent_records ATTACH PARTITION {RETAINED} "
            f"FOR VALUES FROM (MINVALUE) TO ('{end}')"
        )


def _columns(seqs: Mapping[str, int]) -> tuple[list[str], list[int]]:
    nodes = sorted(seqs)
    return nodes, [seqs[n] for n in nodes]
