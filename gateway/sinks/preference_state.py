"""The latest preference state per (site, subject, product line), kept by the record stores.

Preference records are changes; the stores fold each newly delivered one into the subject's
state, leaf by leaf, last writer wins (core/preference_change.merge), in the transaction
that stores the record. The leaf stamps live in the state's ``extra`` (``{"stamps": …}``),
so a late, repeated or reordered delivery leaves the state as the recorded order made it.
The directory (directory.py) reads the same table for the subject API and contactability.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from gateway.core.preference_change import merge

# The table in the embedded store (the directory and the record store share the file).
SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS preference_state (
    site TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    product_line TEXT NOT NULL,
    preferences TEXT NOT NULL,
    record_id TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    extra TEXT NOT NULL,
    PRIMARY KEY (site, subject_id, product_line)
) WITHOUT ROWID;
"""

Key = tuple[str, str, str]  # site, subject_id, product_line
# The states of a batch's keys in one statement (a JSON array of [site, subject, line]).
_SQLITE_STATES = """
SELECT s.site, s.subject_id, s.product_line, s.preferences, s.record_id, s.updated_at, s.extra
FROM json_each(?) AS k
JOIN preference_state s ON s.site = json_extract(k.value, '$[0]')
    AND s.subject_id = json_extract(k.value, '$[1]')
    AND s.product_line = json_extract(k.value, '$[2]')
"""


class State(NamedTuple):
    preferences: dict[str, Any]
    record_id: str
    updated_at: str
    extra: dict[str, Any]


EMPTY = State({"channels": {}, "topics": {}}, "", "", {})


def fold(states: dict[Key, State], records: Iterable[Mapping[str, Any]]) -> set[Key]:
    """Merge preference records (their JSON objects) into ``states`` (missing keys start
    empty); the keys whose state changed."""
    changed: set[Key] = set()
    for r in records:
        key = (r["site"], r["subject_id"], r["product_line"])
        state = states.get(key, EMPTY)
        stamp = f"{r['recorded_at']}|{r['record_id']}"
        stamps = state.extra.get("stamps", {})
        preferences, new_stamps = merge(state.preferences, stamps, r["preferences"], stamp)
        if new_stamps == stamps:
            continue  # delivered before, or every leaf it sets was set later
        newest = max(new_stamps.values())
        at, _, record_id = newest.partition("|")
        states[key] = State(preferences, record_id, at, {**state.extra, "stamps": new_stamps})
        changed.add(key)
    return changed


def sqlite_fold(conn: sqlite3.Connection, records: Sequence[Mapping[str, Any]]) -> None:
    """Fold records into the embedded store's table (the caller holds the transaction)."""
    if not records:
        return
    keys = sorted({(r["site"], r["subject_id"], r["product_line"]) for r in records})
    states: dict[Key, State] = {}
    for row in conn.execute(_SQLITE_STATES, (orjson.dumps(keys).decode(),)):
        states[(row[0], row[1], row[2])] = State(
            orjson.loads(row[3]), row[4], row[5], orjson.loads(row[6])
        )
    conn.executemany(
        "INSERT OR REPLACE INTO preference_state VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                *key,
                orjson.dumps(states[key].preferences).decode(),
                states[key].record_id,
                states[key].updated_at,
                orjson.dumps(states[key].extra).decode(),
            )
            for key in sorted(fold(states, records))
        ],
    )
