"""The audit use cases over the central store: verify, checkpoint, export, proof, reports.

Each call opens one reader connection for its duration, on the central store: PostgreSQL
(gateway/sinks/postgres_audit.py keeps its chain and rollups in triggers) or the embedded
SQLite store (gateway/sinks/sqlite_audit.py keeps them on insert).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Union

import orjson

from gateway.audit import rights_metrics, rollup, rows
from gateway.audit.chain import (
    Base,
    Break,
    Link,
    Walker,
    checkpoint_valid,
    link,
    sign_checkpoint,
    sign_retention,
)
from gateway.core import transition_chain as transitions
from gateway.core.errors import BadRequest
from gateway.core.impressions import FLUSH_SECONDS, Impressions
from gateway.core.settings import Settings
from gateway.sinks.audit_sqlite import SqliteAuditReader
from gateway.sinks.sqlite import FILE_NAME
from gateway.standards.record_check import explain

if TYPE_CHECKING:  # asyncpg is imported only when the store is PostgreSQL
    from gateway.sinks.audit_postgres import PostgresAuditReader

AuditReader = Union["PostgresAuditReader", SqliteAuditReader]


class AuditUnsupported(BadRequest):
    def __init__(self) -> None:
        super().__init__(
            "audit_unsupported_store",
            "the audit trail (chain, exports, reports) lives in the central store: the "
            "embedded SQLite store (GATEWAY_STORE_URL empty) or PostgreSQL",
            status_code=409,
        )


def reader_for(settings: Settings) -> AuditReader:
    """The audit reader of the central store: PostgreSQL, or the embedded SQLite store."""
    url = settings.store_url.strip()
    if not url:
        return SqliteAuditReader(settings.data_dir / FILE_NAME)
    if not url.startswith(("postgresql://", "postgres://")):
        raise AuditUnsupported()
    from gateway.sinks.audit_postgres import PostgresAuditReader

    return PostgresAuditReader(url)


@dataclass
class KindReport:
    """One kind's share of a walk: links checked, problems found, the first of them."""

    checked: int = 0
    problems: int = 0
    first_break: Break | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.first_break is None,
            "checked": self.checked,
            "problems": self.problems,
            "first_break": self.first_break.as_json() if self.first_break else None,
        }


# The kinds every report names, found or not (an `erasure` link appears once records are
# erased in PostgreSQL).
KINDS = ("consent", "preference", "rights")


@dataclass
class VerifyReport:
    checked: int = 0
    seconds: float = 0.0
    first_break: Break | None = None
    problems: list[Break] = field(default_factory=list)
    checkpoints: int = 0
    kinds: dict[str, KindReport] = field(default_factory=lambda: {k: KindReport() for k in KINDS})

    @property
    def ok(self) -> bool:
        return self.first_break is None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.checked / self.seconds) if self.seconds else None,
            "checkpoints_checked": self.checkpoints,
            "kinds": {k: v.as_json() for k, v in sorted(self.kinds.items())},
            "first_break": self.first_break.as_json() if self.first_break else None,
        }


def _note(report: VerifyReport, found: Break) -> None:
    if report.first_break is None:
        report.first_break = found
    if len(report.problems) < 100:
        report.problems.append(found)
    if found.kind is not None:
        kind = report.kinds.setdefault(found.kind, KindReport())
        kind.problems += 1
        if kind.first_break is None:
            kind.first_break = found


async def verify(
    settings: Settings, site: str | None = None, since: datetime | None = None
) -> VerifyReport:
    """Walk every link (of ``site``, from ``since``) and name the first break."""
    report = VerifyReport()
    started = time.perf_counter()
    # With a site filter the site's nodes are walked whole (other sites' links are checked
    # for their place in the chain, not their content), so a gap is still a gap.
    async with reader_for(settings) as reader:
        bases = await _retention_bases(settings, reader, report)
        walker = Walker(anchored=since is None, bases=bases)
        kinds = report.kinds
        async for batch in reader.chain(site, since):
            for r in batch:
                digest = r["digest"]
                kind = kinds.get(r["kind"]) or kinds.setdefault(r["kind"], KindReport())
                kind.checked += 1
                found = walker.feed(
                    Link(r["node_id"], r["seq"], r["kind"], r["ref"], bytes(r["prev_hash"]),
                         bytes(r["hash"]), None if digest is None else bytes(digest),
                         r["wanted"])
                )  # fmt: skip
                if found is not None:
                    _note(report, found)
        if since is None:
            for found in walker.retired_breaks():
                _note(report, found)
        for u in await reader.unlinked(site, since):
            why = "a record without a link: it was inserted past the chain"
            _note(report, Break("unlinked", u["node_id"], None, u["ref"], why, u["kind"]))
        if await reader.rights_state() == "unchained":
            why = ("the rights transitions are not chained yet: open the rights store (start the "
                   "gateway) once to migrate and link them")  # fmt: skip
            _note(report, Break("unlinked", "rights:*", None, None, why, "rights"))
        if site is None:
            for node, (seq, _head) in (await reader.heads()).items():
                if walker.heads.get(node, (0, bytes(32)))[0] != seq and since is None:
                    why = f"the node's head is link {seq}; the chain ends before"
                    _note(report, Break("missing_links", node, seq, None, why, _kind_of(node)))
            await _check_checkpoints(settings, reader, report, bases)
    report.checked = walker.checked
    report.seconds = time.perf_counter() - started
    return report


async def _retention_bases(
    settings: Settings, reader: AuditReader, report: VerifyReport
) -> dict[str, Base]:
    """Where each node's walk starts after the last retention (its checkpoint's signature
    checked); none before any retention."""
    row = await reader.retention()
    if row is None:
        return {}
    bases = {n: Base.from_json(v) for n, v in _loads(row["bases"]).items()}
    bound = row["retained_before"].astimezone(UTC).isoformat()
    key = settings.audit_key.encode()
    if key and sign_retention(key, bound, bases) != row["signature"]:
        where = f"retention checkpoint {row['retention_id']} of {row['taken_at'].isoformat()}"
        why = f"{where}: its signature does not match GATEWAY_AUDIT_KEY"
        _note(report, Break("checkpoint_forged", "", None, None, why))
    return bases


async def _check_checkpoints(
    settings: Settings,
    reader: AuditReader,
    report: VerifyReport,
    bases: Mapping[str, Base],
) -> None:
    key = settings.audit_key.encode()
    for cp in await reader.checkpoints():
        heads_json: Mapping[str, Any] = _loads(cp["heads"])
        heads = {n: (int(v[0]), bytes.fromhex(v[1])) for n, v in heads_json.items()}
        report.checkpoints += 1
        where = f"checkpoint {cp['checkpoint_id']} of {cp['taken_at'].isoformat()}"
        if key and not checkpoint_valid(key, heads, cp["signature"]):
            why = f"{where}: its signature does not match GATEWAY_AUDIT_KEY"
            _note(report, Break("checkpoint_forged", "", None, None, why))
            continue
        found = await reader.links_at(list((n, s) for n, (s, _) in heads.items()))
        for node, (seq, h) in heads.items():
            if node in bases and seq <= bases[node].seq:
                continue  # retired: the retention checkpoint signed what follows
            if found.get((node, seq)) != h:
                why = f"{where} signed another link here: links were rewritten"
                _note(report, Break("checkpoint_mismatch", node, seq, None, why, _kind_of(node)))


def _kind_of(node: str) -> str | None:
    """The kind of a node's links: ``rights`` for a site's rights chain; a records node
    mixes kinds."""
    return transitions.KIND if transitions.is_rights_node(node) else None


def _loads(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


async def checkpoint(settings: Settings) -> dict[str, Any]:
    """Sign the chain heads as they are now and keep the signature in the store."""
    if not settings.audit_key:
        raise BadRequest("missing_audit_key", "set GATEWAY_AUDIT_KEY to sign checkpoints")
    async with reader_for(settings) as reader:
        heads = await reader.heads()
        signature = sign_checkpoint(settings.audit_key.encode(), heads)
        plain = {n: [s, h.hex()] for n, (s, h) in sorted(heads.items())}
        checkpoint_id = await reader.add_checkpoint(plain, signature)
    return {"checkpoint_id": checkpoint_id, "heads": plain, "signature": signature}


async def export(
    settings: Settings,
    site: str,
    start: datetime | None,
    end: datetime | None,
    filters: Mapping[str, str],
    fmt: str,
) -> AsyncIterator[bytes]:
    """The records as CSV or JSON Lines, one batch at a time.

    JSON Lines puts each banner version's exact texts (``{"type": "banner_version", …}``)
    before the first record that references it; CSV rows name the version, whose texts
    ``export_versions`` gives (the CLI writes them beside the file).
    """
    seen: set[str] = set()
    async with reader_for(settings) as reader:
        if fmt == "csv":
            yield rows.csv_header().encode()
        async for batch in reader.records(site, start, end, filters):
            if fmt == "csv":
                yield rows.csv_rows(batch).encode()
                continue
            new = {r["banner_version"] for r in batch} - seen
            if new:
                seen |= new
                texts = await reader.version_texts(site, sorted(new))
                yield rows.jsonl_rows([texts[v] for v in sorted(new) if v in texts],
                                      "banner_version")  # fmt: skip
            yield rows.jsonl_rows(batch)


async def export_versions(settings: Settings, site: str, versions: list[str]) -> dict[str, Any]:
    async with reader_for(settings) as reader:
        return await reader.version_texts(site, versions)


async def proof(settings: Settings, site: str, subject_id: str) -> dict[str, Any]:
    """GDPR Art. 7(1): every record of the subject, the exact texts and rule shown each
    time, and whether each record's chain link holds."""
    async with reader_for(settings) as reader:
        records: list[dict[str, Any]] = []
        async for batch in reader.records(site, None, None, {"subject_id": subject_id}):
            records += batch
            if len(records) > 10_000:
                raise BadRequest("too_many_records", "over 10,000 records: use the export")
        versions = await reader.version_texts(site, sorted({r["banner_version"] for r in records}))
        links = {r["ref"]: r for r in await reader.subject_links([r["record_id"] for r in records])}
    out = []
    for r in records:
        lk = links.get(r["record_id"])
        check: dict[str, Any] = {"linked": lk is not None}
        if lk is not None:
            ok = link(bytes(lk["prev_hash"]), lk["kind"], bytes(lk["digest"])) == bytes(lk["hash"])
            check.update(node_id=lk["node_id"], seq=lk["seq"], hash=bytes(lk["hash"]).hex(),
                         prev_hash=bytes(lk["prev_hash"]).hex(), content_matches=ok)  # fmt: skip
        item = {"record": r, "rule_id": r["rule_id"], "chain": check}
        strings = explain(r.get("signals"))
        if strings is not None:  # what the TC/GPP strings the visitor got said
            item["iab"] = strings
        out.append(item)
    return {
        "site": site,
        "subject_id": subject_id,
        "records": out,
        "banner_versions": versions,
        "verified": all(o["chain"].get("content_matches") for o in out),
    }


async def consent_report(
    settings: Settings, site: str, start: date | None, end: date | None, dims: tuple[str, ...]
) -> dict[str, Any]:
    """Counts and rates per group (from the rollups), purpose grant rates when grouped by
    ``purpose``, and the flagged changes at banner version changes."""
    plain_dims = tuple(d for d in dims if d != "purpose")
    async with reader_for(settings) as reader:
        if "purpose" in dims:
            found = await reader.purpose_rollup(site, start, end, plain_dims)
            header, lines = rollup.purpose_table(plain_dims, found)
        else:
            found = await reader.consent_rollup(site, start, end, plain_dims)
            seen = await reader.impressions(site, start, end, plain_dims)
            views = {tuple(r[d] for d in plain_dims): int(r["n"]) for r in seen}
            header, lines = rollup.consent_table(plain_dims, found, views)
        changes = rollup.version_changes(await reader.version_rates(site))
    if len(lines) > rollup.MAX_ROWS:
        raise BadRequest("report_too_large", "narrow the date range or the grouping")
    return {"site": site, "group": list(dims), "columns": header, "rows": lines,
            "changes": changes}  # fmt: skip


async def rights_report(settings: Settings, site: str, year: int) -> dict[str, Any]:
    """CCPA §7102 figures for the requests received in ``year``."""
    async with reader_for(settings) as reader:
        try:
            found = await reader.rights_year(site, year)
        except LookupError:
            raise BadRequest(
                "rights_not_available",
                "this store has no rights requests (the rights package keeps them)",
                status_code=409,
            ) from None
    header, lines = rights_metrics.ccpa_table(found)
    return {"site": site, "year": year, "columns": header, "rows": lines}


async def flush_impressions(settings: Settings, impressions: Impressions) -> None:
    """Add the counted impressions to today's (UTC) counts in the store; on failure they
    are kept for the next flush."""
    taken = impressions.take()
    if not taken:
        return
    try:
        async with reader_for(settings) as reader:
            today = datetime.now(UTC).date()
            await reader.add_impressions(today, [(*k, n) for k, n in taken.items()])
    except BaseException:
        impressions.give_back(taken)
        raise


async def flush_impressions_forever(settings: Settings, impressions: Impressions) -> None:
    """The app's task: flush every FLUSH_SECONDS (and once more when cancelled)."""
    try:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await flush_impressions(settings, impressions)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(flush_impressions(settings, impressions), 5.0)
        raise
