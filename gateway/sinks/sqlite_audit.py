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

import hashlib
import sqlite3
from collections.abc import Mapping
from itertools import groupby
from typing import Any

import orjson

from gateway.core.hashchain import GENESIS, link
from gateway.sinks.rights import ERASED_FIELDS

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

# The report dimensions of a stored record, as gateway/sinks/postgres_audit.py has them.
_DIMS = """
    json_extract(r.body, '$.site'), substr(json_extract(r.body, '$.recorded_at'), 1, 10),
    coalesce(json_extract(r.body, '$.region_country')
             || coalesce('-' || json_extract(r.body, '$.region_subdivision'), ''), ''),
    json_extract(r.body, '$.rule_id'), json_extract(r.body, '$.banner_version'),
    json_extract(r.body, '$.language'), json_extract(r.body, '$.channel'),
    json_extract(r.body, '$.action')
"""
_ROLLUP = f"""
INSERT INTO consent_rollup AS c
SELECT {_DIMS}, coalesce(json_extract(r.body, '$.gpc'), 0), count(*)
FROM consent_records r WHERE r.seq > ? GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
ON CONFLICT (site, day, region, rule_id, banner_version, language, channel, action, gpc)
DO UPDATE SET n = c.n + excluded.n
"""
_PURPOSE_ROLLUP = f"""
INSERT INTO consent_purpose_rollup AS c
SELECT {_DIMS}, p.key, sum(p.type = 'true'), count(*)
FROM consent_records r, json_each(r.body, '$.choices') AS p WHERE r.seq > ?
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
ON CONFLICT (site, day, region, rule_id, banner_version, language, channel, action, purpose)
DO UPDATE SET granted = c.granted + excluded.granted, n = c.n + excluded.n
"""


def _canonical(data: Mapping[str, Any]) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def personal_digest(data: Mapping[str, Any]) -> bytes:
    kept = {"record_id": data.get("record_id"), **{k: data.get(k) for k in PERSONAL}}
    return hashlib.sha256(_canonical(kept)).digest()


def is_erased(data: Mapping[str, Any]) -> bool:
    return all(data.get(k) == v for k, v in ERASED_FIELDS.items())


def record_digest(data: Mapping[str, Any], kept_personal: bytes | None = None) -> bytes:
    """The digest a record's link commits to; an erased record's personal part is the one
    kept beside its link."""
    core = hashlib.sha256(_canonical({k: v for k, v in data.items() if k not in PERSONAL}))
    if kept_personal is not None and is_erased(data):
        personal = kept_personal
    else:
        personal = personal_digest(data)
    return hashlib.sha256(core.digest() + personal).digest()


def follow(conn: sqlite3.Connection, after_seq: int) -> None:
    """Link and count the records stored with ``seq > after_seq`` (in the caller's
    transaction): one chain per node, in (recorded_at, record_id) order."""
    rows = conn.execute(
        "SELECT seq, body FROM consent_records WHERE seq > ?", (after_seq,)
    ).fetchall()
    if not rows:
        return
    found = sorted(
        ((seq, orjson.loads(body)) for seq, body in rows),
        key=lambda r: (r[1]["node_id"], r[1]["recorded_at"], r[1]["record_id"]),
    )
    links = []
    for node, group in groupby(found, key=lambda r: str(r[1]["node_id"])):
        head = conn.execute("SELECT seq, hash FROM audit_heads WHERE node_id = ?", (node,))
        n, prev = head.fetchone() or (0, GENESIS)
        for record_seq, data in group:
            n += 1
            personal = personal_digest(data)
            current = link(prev, "consent", record_digest(data, personal))
            links.append((node, n, "consent", data["record_id"], data["site"],
                          data["recorded_at"], record_seq, prev, current, personal))  # fmt: skip
            prev = current
        conn.execute(
            "INSERT INTO audit_heads VALUES (?, ?, ?) ON CONFLICT (node_id) "
            "DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (node, n, prev),
        )
    conn.executemany("INSERT INTO audit_chain VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", links)
    conn.execute(_ROLLUP, (after_seq,))
    conn.execute(_PURPOSE_ROLLUP, (after_seq,))
