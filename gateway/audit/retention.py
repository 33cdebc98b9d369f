"""`consent-gateway store retention`: drop whole expired months of records, never what the
retention period still needs.

A month partition expires when all of it is older than the cutoff (now less the period).
Before its drop, retention keeps aside (in ``consent_records_retained``):

- each subject's latest record, whatever its age: the state in force must stay provable;
- every record whose audit chain link cannot retire yet: a node's links retire only up to
  the last one before its first link of a record still in the period, so a record that
  arrived late (an outbox replayed after an outage) keeps the chain around it whole.

Records inside the period live in partitions that have not expired: they are not touched.
Then, in the same transaction, it writes a retention checkpoint signed with
``GATEWAY_AUDIT_KEY``: per node, the retired point (seq and link) from which ``audit verify``
starts, and a digest of the retired links it kept. Only then are the links of the dropped
records deleted and the partitions dropped. Rollups (reports) are kept: they hold counts,
no personal data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.audit.chain import Base, KeptDigest, sign_retention
from gateway.core.errors import BadRequest
from gateway.core.settings import Settings

_PERIOD = re.compile(r"(\d{1,5})([dmy])")


def cutoff_for(older_than: str, now: datetime | None = None) -> datetime:
    """The cutoff an ``--older-than`` value names: ``400d``, ``13m`` (calendar months),
    ``2y``, or a date ``YYYY-MM-DD`` (UTC)."""
    now = now or datetime.now(UTC)
    text = older_than.strip()
    m = _PERIOD.fullmatch(text)
    if m is None:
        try:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        except ValueError:
            raise BadRequest(
                "invalid_period",
                "--older-than takes a period (400d, 13m, 2y) or a date (YYYY-MM-DD)",
            ) from None
    n, unit = int(m[1]), m[2]
    if unit == "d":
        return now - timedelta(days=n)
    months = n * (12 if unit == "y" else 1)
    total = now.year * 12 + (now.month - 1) - months
    year, month = divmod(total, 12)
    day = min(now.day, 28)  # a month's end moves to the 28th: never later than asked
    return now.replace(year=year, month=month + 1, day=day)


@dataclass
class RetentionReport:
    cutoff: datetime
    dry_run: bool
    retained_before: datetime | None = None
    dropped: list[dict[str, Any]] = field(default_factory=list)
    kept: int = 0
    links_retired: int = 0
    retention_id: int | None = None
    bases: dict[str, list[Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "retained_before": self.retained_before.isoformat() if self.retained_before else None,
            "dropped_partitions": self.dropped,
            "records_dropped": sum(int(p["rows"]) for p in self.dropped) - self.kept,
            "records_kept": self.kept,
            "links_retired": self.links_retired,
            "retention_id": self.retention_id,
            "bases": self.bases,
        }


async def retention(settings: Settings, cutoff: datetime, *, dry_run: bool) -> RetentionReport:
    """Drop the month partitions wholly older than ``cutoff`` (``dry_run``: only say what
    would go, and roll back)."""
    if not settings.store_url.strip().startswith(("postgresql://", "postgres://")):
        raise BadRequest(
            "retention_needs_postgres",
            "retention drops monthly partitions of the PostgreSQL store: "
            "set GATEWAY_STORE_URL to a postgresql:// URL",
            status_code=409,
        )
    if not dry_run and not settings.audit_key:
        raise BadRequest(
            "missing_audit_key",
            "set GATEWAY_AUDIT_KEY: retention signs the checkpoint audit verify starts from",
        )
    if cutoff > datetime.now(UTC):
        raise BadRequest("invalid_period", "the cutoff is in the future: nothing would be kept")
    report = RetentionReport(cutoff, dry_run)
    from gateway.sinks.retention_postgres import RetentionTx  # asyncpg only when used

    async with RetentionTx(settings.store_url.strip()) as tx:
        tx.rollback = dry_run
        await tx.lock()
        expired = [p for p in await tx.months(count_rows=True) if p.end <= cutoff]
        if not expired:
            return report
        previous, old_bases = await tx.previous()
        bound = expired[-1].end
        report.retained_before = bound
        points = await tx.retire_points(bound)
        seqs = {n: s for n, (s, _) in points.items()}
        report.kept = await tx.keep(previous, bound, seqs)
        report.links_retired = await tx.retire_links(seqs)
        digests: dict[str, KeptDigest] = {n: KeptDigest() for n in seqs}
        async for node, seq, kept_hash in tx.retired(seqs):
            digests[node].add(seq, kept_hash)
        bases: dict[str, Base] = {}
        for node, (seq, link_hash) in points.items():
            if link_hash is None:  # retired by an earlier retention, with nothing since
                old = old_bases.get(node)
                if old is None or int(old[0]) != seq:
                    raise BadRequest(
                        "chain_broken",
                        f"link {seq} of node {node!r} is gone: run `consent-gateway audit verify`",
                        status_code=409,
                    )
                link_hash = bytes.fromhex(old[1])
            d = digests[node]
            bases[node] = Base(seq, link_hash, d.hexdigest(), d.count)
        plain = {n: b.as_json() for n, b in sorted(bases.items())}
        key = settings.audit_key.encode()
        signature = sign_retention(key, bound.astimezone(UTC).isoformat(), bases) if key else ""
        report.bases = plain
        report.dropped = [{"partition": p.name, "rows": p.rows} for p in expired]
        report.retention_id = await tx.record(
            cutoff, bound, [p.name for p in expired], report.kept, plain, signature
        )
        await tx.drop(expired, bound)
    return report
