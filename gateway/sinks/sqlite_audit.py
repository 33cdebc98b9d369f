"""The audit trail in the embedded SQLite store: the hash chain and the report rollups,
computed on insert in the write transaction (SQLite has no sha256 in SQL, so the store's
writer links the newly stored records in Python; gateway/sinks/postgres_audit.py does the
same in PostgreSQL triggers).

Same chain as PostgreSQL (gateway/core/hashchain.py: one chain per node, records linked in
(recorded_at, record_id) order per batch), with an erasure-proof digest: a record's digest is
``sha256(core || personal)``, ``core`` the sha256 of its canonical JSON without the fields
erasure blanks (ERASED_FIELDS), ``personal`` the sha256 of those fields and the record id,
kept beside the link. Erasing them leaves the link verifiable from the kept ``personal``;
changing any other field, or the kept digest, breaks it. The kept digest is a one-way hash of
an IP prefix, a user agent, a page URL and an idempotency key (see the README's erasure
notes).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from itertools import groupby
from typing import Any

import orjson

from gateway.core import hashchain, row_chunks
from gateway.core.hashchain import GENESIS, link, split_digest
from gateway.sinks.rights import ERASED_FIELDS
from gateway.sinks.sqlite_common import stored_since

PERSONAL = tuple(sorted(ERASED_FIELDS))

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_chain (
    node_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    site TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    record_seq INTEGER NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    personal_digest BLOB NOT NULL,
    PRIMARY KEY (node_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS audit_chain_ref ON audit_chain (kind, ref);
CREATE TABLE IF NOT EXISTS audit_heads (
    node_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    checkpoint_id INTEGER PRIMARY KEY,
    taken_at TEXT NOT NULL,
    heads TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS consent_rollup (
    site TEXT NOT NULL, day TEXT NOT NULL, region TEXT NOT NULL, rule_id TEXT NOT NULL,
    banner_version TEXT NOT NULL, language TEXT NOT NULL, channel TEXT NOT NULL,
    action TEXT NOT NULL, gpc INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (site, day, region, rule_id, banner_version, language, channel, action, gpc)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consent_purpose_rollup (
    site TEXT NOT NULL, day TEXT NOT NULL, region TEXT NOT NULL, rule_id TEXT NOT NULL,
    banner_version TEXT NOT NULL, language TEXT NOT NULL, channel TEXT NOT NULL,
    action TEXT NOT NULL, purpose TEXT NOT NULL, granted INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (site, day, region, rule_id, banner_version, language, channel, action, purpose)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS banner_impressions (
    site TEXT NOT NULL, day TEXT NOT NULL, banner_version TEXT NOT NULL, rule_id TEXT NOT NULL,
    region TEXT NOT NULL, language TEXT NOT NULL, channel TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (site, day, banner_version, rule_id, region, language, channel)
) WITHOUT ROWID
"""

_ROLLUP = """
INSERT INTO consent_rollup AS c VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (site, day, region, rule_id, banner_version, language, channel, action, gpc)
DO UPDATE SET n = c.n + excluded.n
"""
_PURPOSE_ROLLUP = """
INSERT INTO consent_purpose_rollup AS c VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (site, day, region, rule_id, banner_version, language, channel, action, purpose)
DO UPDATE SET granted = c.granted + excluded.granted, n = c.n + excluded.n
"""


# A batch's links go in as multi-row INSERTs, not one statement a link: every statement
# the store's thread runs gives the GIL up and must win it back from the busy event loop.
# row_chunks pads them to a few statement sizes (the statement cache keeps them all).
_LINK_ROWS = 100  # 10 parameters a row: 1,000, far below SQLite's 32,766


_INSERT_LINKS = "INSERT INTO audit_chain"


def _dims(data: Mapping[str, Any]) -> tuple[Any, ...]:
    """A record's report dimensions, as gateway/sinks/postgres_audit.py has them: site, UTC
    day, region ("CC" or "CC-SUB", "" unknown), rule, banner version, language, channel,
    action."""
    country, sub = data.get("region_country"), data.get("region_subdivision")
    region = f"{country}-{sub}" if country and sub else (country or "")
    return (data["site"], str(data["recorded_at"])[:10], region, data["rule_id"],
            data["banner_version"], data["language"], data["channel"], data["action"])  # fmt: skip


def _count(conn: sqlite3.Connection, records: Sequence[Mapping[str, Any]]) -> None:
    """Add the records to the rollups (counted here: SQLite's json_each costs 30 µs a record);
    in key order, as PostgreSQL's triggers do.

    A batch's records come in a few shapes (same dimensions, GPC flag and choices), so each
    record is counted once by its shape and the shapes are spread over the rollup keys:
    measured 5.5 -> 1.9 µs a record (batches of 150), on the store's thread but under the
    GIL the event loop needs."""
    shapes: Counter[tuple[Any, ...]] = Counter()
    for data in records:
        choices = data.get("choices") or {}
        shapes[(_dims(data), int(bool(data.get("gpc"))),
                tuple([(p, on is True) for p, on in choices.items()]))] += 1  # fmt: skip
    counts: Counter[tuple[Any, ...]] = Counter()
    purposes: Counter[tuple[Any, ...]] = Counter()
    granted: Counter[tuple[Any, ...]] = Counter()
    for (dims, gpc, choices), n in shapes.items():
        counts[(*dims, gpc)] += n
        for purpose, on in choices:
            purposes[(*dims, purpose)] += n
            granted[(*dims, purpose)] += n if on else 0
    conn.executemany(_ROLLUP, [(*k, n) for k, n in sorted(counts.items())])
    conn.executemany(_PURPOSE_ROLLUP, [(*k, granted[k], n) for k, n in sorted(purposes.items())])


def personal_digest(data: Mapping[str, Any]) -> bytes:
    return hashchain.personal_digest(data, PERSONAL)


def is_erased(data: Mapping[str, Any]) -> bool:
    return all(data.get(k) == v for k, v in ERASED_FIELDS.items())


def record_digest(data: Mapping[str, Any], kept_personal: bytes | None = None) -> bytes:
    """The digest a record's link commits to; an erased record's personal part is the one
    kept beside its link."""
    if kept_personal is not None and is_erased(data):
        return split_digest(data, PERSONAL, kept_personal)
    return _digests(data)[1]


def _digests(data: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """A consent record's kept personal digest and the digest its link commits to."""
    kept = personal_digest(data)
    return kept, split_digest(data, PERSONAL, kept)


def follow(conn: sqlite3.Connection, after_seq: int, chunk: int = 10_000) -> None:
    """Link and count the records stored with ``seq > after_seq`` (in the caller's
    transaction), ``chunk`` at a time, decoding their stored bodies: what migration runs over
    an existing store (holding one chunk in memory). The write path hands its records over
    decoded already (``link_stored``)."""
    for rows in stored_since(conn, "consent_records", after_seq, chunk):
        link_stored(conn, [(seq, orjson.loads(body)) for seq, body in rows])


def link_stored(conn: sqlite3.Connection, stored: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
    """Link and count consent records just stored, as ``(seq, record object)`` (in the
    caller's transaction): one chain per node, in (recorded_at, record_id) order within the
    call, as PostgreSQL links each statement's rows. The objects are the stored records'
    decoded JSON; a batch's writer has them already, so nothing is read back or parsed again
    (with the multi-row inserts and the counting by shape, measured on batches of 150 recorded
    consents: 48-54 -> 28-30 µs of store CPU a record)."""
    found = link_records(conn, stored, "consent", _digests)
    _count(conn, [data for _, data in found])


Stored = Sequence[tuple[int, Mapping[str, Any]]]


def link_records(
    conn: sqlite3.Connection,
    stored: Stored,
    kind: str,
    digests: Callable[[Mapping[str, Any]], tuple[bytes, bytes]],
) -> Stored:
    """Link records of ``kind`` just stored, as ``(seq, record object)``, into their nodes'
    chains (in the caller's transaction), in (recorded_at, record_id) order within the call,
    as PostgreSQL links each statement's rows; ``digests(record)`` gives the kept personal
    digest and the digest the link commits to. Returns the records in the order linked."""
    found = sorted(stored, key=lambda r: (r[1]["node_id"], r[1]["recorded_at"], r[1]["record_id"]))
    links = []
    for node, group in groupby(found, key=lambda r: str(r[1]["node_id"])):
        head = conn.execute("SELECT seq, hash FROM audit_heads WHERE node_id = ?", (node,))
        n, prev = head.fetchone() or (0, GENESIS)
        for record_seq, data in group:
            n += 1
            kept, digest = digests(data)
            current = link(prev, kind, digest)
            links.append((node, n, kind, data["record_id"], data["site"],
                          data["recorded_at"], record_seq, prev, current, kept))  # fmt: skip
            prev = current
        conn.execute(
            "INSERT INTO audit_heads VALUES (?, ?, ?) ON CONFLICT (node_id) "
            "DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (node, n, prev),
        )
    for chunk in row_chunks.slices(links, _LINK_ROWS):
        conn.execute(*row_chunks.statement(_INSERT_LINKS, 10, chunk, _LINK_ROWS))
    return found
