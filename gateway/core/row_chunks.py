"""Multi-row INSERTs in a few fixed sizes, so a connection caches a few statements.

A batch of rows goes into SQLite as multi-row ``INSERT … VALUES (…),(…)`` statements: one
parse and one sqlite3 call (one GIL hand-off) per statement instead of per row. But the
statement's text depends on its row count, and the sqlite3 module keeps each prepared
statement in a per-connection cache (128 of them): with batches of every length, that cache
held up to 128 compiled statements of up to 200 rows each, in the connection's thread's
malloc arena. Issue 15 measured ~28 MB for 200 lengths in one connection against 0.8 MB for
five, and it is what grew a worker's memory with the number of records it had seen.

So a slice of n rows runs in the statement for ``size(n)`` rows, the next of 1, 4, 16, 64, …
(and ``most``), padded with rows of NULLs that its ``WHERE`` drops: still one statement per
``most`` rows, and only a handful of distinct statements per table. The real rows go in
consecutively and in order, so ``lastrowid`` still dates the first of them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_STEP = 4  # each statement size is this many times the one below it


def size(n: int, most: int) -> int:
    """The statement size that takes ``n`` rows (1 <= n <= most): the first of 1, 4, 16, …
    that holds them, or ``most``."""
    if not 1 <= n <= most:
        raise ValueError(f"a statement takes 1 to {most} rows, not {n}")
    rows = 1
    while rows < n:
        rows *= _STEP
    return min(rows, most)


def slices(rows: Sequence[T], most: int) -> Iterator[Sequence[T]]:
    """``rows`` in consecutive slices of at most ``most``, in order."""
    for start in range(0, len(rows), most):
        yield rows[start : start + most]


@functools.lru_cache(maxsize=64)
def insert(head: str, columns: int, rows: int) -> str:
    """``head`` (``INSERT [OR IGNORE] INTO table (cols…)``) for ``rows`` rows of ``columns``
    values, keeping only the rows whose first value is not NULL (so the first column must
    never be NULL in a real row). ``head`` is always the caller's constant, never input."""
    row = "(" + ",".join("?" * columns) + ")"
    picked = ", ".join(f"column{i}" for i in range(1, columns + 1))
    return (
        f"{head} SELECT {picked} FROM (VALUES {','.join([row] * rows)}) WHERE column1 IS NOT NULL"
    )


def statement(
    head: str, columns: int, chunk: Sequence[Sequence[Any]], most: int
) -> tuple[str, list[Any]]:
    """The statement and its parameters that insert ``chunk`` (1 to ``most`` rows of
    ``columns`` values each): the rows flattened, then NULL rows up to the statement's
    size."""
    rows = size(len(chunk), most)
    params = [value for row in chunk for value in row]
    params += [None] * (columns * (rows - len(chunk)))
    return insert(head, columns, rows), params
