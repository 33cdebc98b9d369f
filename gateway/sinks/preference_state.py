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
    keys = sorted({(r["site"], r["subject_id"], r["product_line"]) for r in records})
    states: dict[Key, State] = {}
    for key in keys:
        row = conn.execute(
            "SELECT preferences, record_id, updated_at, extra FROM preference_state "
            "WHERE site = ? AND subject_id = ? AND product_line = ?",
            key,
        ).fetchone()
        if row is not None:
            states[key] = State(orjson.loads(row[0]), row[1], row[2], orjson.loads(row[3]))
    for key in sorted(fold(states, records)):
        s = states[key]
        conn.execute(
            "INSERT OR REPLACE INTO preference_state VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                *key,
                orjson.dumps(s.preferences).decode(),
                s.record_id,
                s.updated_at,
                orjson.dumps(s.extra).decode(),
            ),
        )
