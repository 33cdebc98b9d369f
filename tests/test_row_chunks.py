"""Multi-row statements come in a few fixed lengths (issue 15: a worker's memory).

The threat: the sqlite3 module caches up to 128 prepared statements per connection, and a
multi-row INSERT's text depends on its row count. Batches of every length (which load
produces: group commits of 1..64, forwarder batches of 1..1000) filled that cache with big
compiled statements, ~28 MB in one connection, and a worker grew with what it had seen.
These tests prove a batch runs in statements of a fixed few sizes, padded rows never land,
and the outbox, the store and the audit chain each prepare only those statements whatever
batch lengths they are given, storing every row once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.core import row_chunks
from gateway.sinks.sqlite import SqliteStore
from tests.helpers import opened
from tests.pg import make_record


@pytest.mark.parametrize("most", [1, 7, 100, 200, 500])
def test_every_length_runs_in_one_of_a_few_statement_sizes(most: int) -> None:
    sizes = {row_chunks.size(n, most) for n in range(1, most + 1)}
    for n in range(1, most + 1):
        assert n <= row_chunks.size(n, most) <= most
    # 1, 4, 16, 64, 256 below most, and most: at most log4(most) + 2 statements.
    assert sizes <= {4**k for k in range(6) if 4**k < most} | {most}
    assert most in sizes


@pytest.mark.parametrize("n", [0, -1, 201])
def test_a_length_outside_one_statement_is_refused(n: int) -> None:
    with pytest.raises(ValueError, match="1 to 200 rows"):
        row_chunks.size(n, 200)


def test_slices_keep_the_order_and_every_row() -> None:
    rows = list(range(437))
    parts = list(row_chunks.slices(rows, 200))
    assert [len(p) for p in parts] == [200, 200, 37]
    assert [r for p in parts for r in p] == rows
    assert list(row_chunks.slices([], 200)) == []


def test_padding_rows_never_land_and_the_real_ones_are_consecutive() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, a TEXT NOT NULL, b TEXT)")
    sql, params = row_chunks.statement("INSERT INTO t (a, b)", 2, [("x", None), ("y", "z")], 8)
    assert sql.count("(?,?)") == 4  # two rows in the 4-row statement
    last = conn.execute(sql, params).lastrowid
    assert conn.execute("SELECT seq, a, b FROM t").fetchall() == [(1, "x", None), (2, "y", "z")]
    assert last == 2  # so the caller dates its first row: last - len(rows) + 1


@pytest.fixture
def prepared(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[int]]:
    """The statement sizes built, by table: the statements the connections prepare."""
    built: dict[str, set[int]] = {}
    real = row_chunks.insert

    def insert(head: str, columns: int, rows: int) -> str:
        built.setdefault(head.split(" INTO ")[1].split()[0], set()).add(rows)
        return real(head, columns, rows)

    monkeypatch.setattr(row_chunks, "insert", insert)
    return built


async def test_the_store_and_its_chain_prepare_a_few_statements_for_any_batch(
    tmp_path: Path, prepared: dict[str, set[int]]
) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    try:
        stored = 0
        for n in range(1, 260, 3):  # 87 batch lengths
            await store.write_batch([make_record(f"s{stored + i}") for i in range(n)])
            stored += n
        # Consents: 1, 4, 16, 64, 200 rows; links: 1, 4, 16, 64, 100.
        assert prepared["consent_records"] <= {1, 4, 16, 64, 200}
        assert prepared["audit_chain"] <= {1, 4, 16, 64, 100}
        # And every record is stored and linked once (no padding row, none lost).
        counts = await store._call(
            lambda conn: conn.execute(
                "SELECT (SELECT count(*) FROM consent_records), (SELECT count(*) FROM audit_chain)"
            ).fetchone()
        )
        assert counts == (stored, stored)
    finally:
        await store.close()


async def test_the_outbox_prepares_a_few_statements_for_any_group(
    tmp_path: Path, prepared: dict[str, set[int]]
) -> None:
    outbox = await opened(tmp_path)
    try:
        appended: list[str] = []
        for n in range(1, 70):
            # n appends at once commit as one group (or a few, if a commit is in flight).
            records = [make_record(f"o{n}-{i}") for i in range(n)]
            await asyncio.gather(*(outbox.append(r, "r") for r in records))
            appended += [r.record_id for r in records]
        assert prepared["outbox"] <= {1, 4, 16, 64, 256}
        # Every record once, in order, with the seqs the hand-over gave the forwarder.
        claimed = await outbox.claim(10_000)
        assert [i.record_id for i in claimed] == appended
        assert [i.seq for i in claimed] == sorted({i.seq for i in claimed})
    finally:
        await outbox.close()
