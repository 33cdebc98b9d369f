"""Id sets on the wire: bitfields, ``Range(Int)``, ``Range(Fibonacci)`` and the vendor vector.

A hostile string can describe ranges that expand to millions of ids (4,095 entries of
1..65,535 each), so ranges are merged as intervals first and every decoder shares one
``IdBudget``: past it the string is refused instead of eating memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from gateway.standards.bits import MAX_ID, BitReader, BitWriter

MAX_IDS = 200_000
"""Ids one string may expand to: a real TC string with every GVL vendor in every vector and
restrictions on every purpose stays far below this."""

Choice = Literal["iabtcf", "iabgpp"]


class IdBudget:
    """Counts the ids a decoder has expanded, across all fields of one string."""

    def __init__(self, limit: int = MAX_IDS) -> None:
        self.left = limit

    def spend(self, reader: BitReader, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise reader.fail(f"expands to more than {MAX_IDS} ids")


def groups(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted distinct ids as runs of consecutive ids, ``(first, last)``."""
    ordered = sorted(set(ids))
    if not ordered:
        return []
    runs: list[tuple[int, int]] = []
    first = last = ordered[0]
    for i in ordered[1:]:
        if i != last + 1:
            runs.append((first, last))
            first = i
        last = i
    runs.append((first, last))
    return runs


def _expand(runs: list[tuple[int, int]], reader: BitReader, budget: IdBudget) -> list[int]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(runs):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    budget.spend(reader, sum(last - first + 1 for first, last in merged))
    return [i for first, last in merged for i in range(first, last + 1)]


def read_int_range(
    reader: BitReader, name: str, budget: IdBudget, max_id: int = MAX_ID
) -> list[int]:
    """``Range(Int)``: NumEntries (12), then per entry IsARange (1), start (16), [end (16)]."""
    runs = []
    for n in range(reader.number(12, f"{name} NumEntries")):
        is_range = reader.flag(f"{name} entry {n + 1} IsARange")
        first = reader.number(16, f"{name} entry {n + 1} StartOrOnlyVendorId")
        last = reader.number(16, f"{name} entry {n + 1} EndVendorId") if is_range else first
        if first < 1 or last < first or last > max_id:
            raise reader.fail(f"{name} entry {n + 1}: bad id range {first}..{last} (max {max_id})")
        runs.append((first, last))
    return _expand(runs, reader, budget)


def write_int_range(writer: BitWriter, runs: Sequence[tuple[int, int]]) -> None:
    """``Range(Int)`` of runs from ``groups``."""
    writer.number(len(runs), 12)
    for first, last in runs:
        writer.flag(first != last)
        writer.number(first, 16)
        if first != last:
            writer.number(last, 16)


def int_range_bits(runs: Sequence[tuple[int, int]]) -> int:
    return 12 + sum(17 if first == last else 33 for first, last in runs)


def read_fibonacci_range(reader: BitReader, name: str, budget: IdBudget) -> list[int]:
    """``Range(Fibonacci)``: NumEntries (12), then per entry IsARange (1), the offset from the
    last id seen, and for a group its length; ids strictly increase."""
    runs = []
    last = 0
    for n in range(reader.number(12, f"{name} NumEntries")):
        is_group = reader.flag(f"{name} entry {n + 1} IsGroup")
        first = last + reader.fibonacci(f"{name} entry {n + 1} offset")
        last = first + reader.fibonacci(f"{name} entry {n + 1} length") if is_group else first
        if last > MAX_ID:
            raise reader.fail(f"{name} entry {n + 1}: id {last} is above {MAX_ID}")
        runs.append((first, last))
    return _expand(runs, reader, budget)


def write_fibonacci_range(writer: BitWriter, ids: Iterable[int]) -> None:
    runs = groups(ids)
    writer.number(len(runs), 12)
    offset = 0
    for first, last in runs:
        writer.flag(first != last)
        writer.fibonacci(first - offset)
        if first != last:
            writer.fibonacci(last - first)
        offset = last


def read_vendor_vector(reader: BitReader, name: str, budget: IdBudget) -> list[int]:
    """MaxVendorId (16), IsRangeEncoding (1), then a bitfield of MaxVendorId bits or a range."""
    max_id = reader.number(16, f"{name} MaxVendorId")
    if reader.flag(f"{name} IsRangeEncoding"):
        return read_int_range(reader, name, budget, max_id)
    budget.spend(reader, max_id)
    return reader.id_list(max_id, f"{name} BitField")


def _iabtcf_prefers_range(runs: Sequence[tuple[int, int]]) -> bool:
    """The choice @iabtechlabtcf/core makes (kept for byte-identical strings): a range once
    MaxVendorId exceeds 45, when its running size estimate (17 bits per run start plus 16 per
    run end, single ids counted once at 16, the last id's cost left out) stays below the
    bitfield's."""
    max_id = runs[-1][1]
    if max_id <= 45:
        return False
    estimate = 29
    for first, last in runs:
        estimate += 16 if first == last else 33
    return estimate - 16 < 17 + max_id


def write_vendor_vector(writer: BitWriter, ids: Sequence[int], choice: Choice) -> None:
    runs = groups(ids)
    max_id = runs[-1][1] if runs else 0
    writer.number(max_id, 16)
    if not runs:
        use_range = False
    elif choice == "iabtcf":
        use_range = _iabtcf_prefers_range(runs)
    else:  # @iabgpp/cmpapi: a range when it is no longer than the bitfield
        use_range = int_range_bits(runs) <= max_id
    writer.flag(use_range)
    if use_range:
        write_int_range(writer, runs)
    else:
        writer.id_list(ids, max_id)
