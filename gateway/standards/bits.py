"""Bit strings: a reader and a writer over ``"0"``/``"1"`` text, fixed and Fibonacci integers.

Both specifications define their fields bit by bit, most significant bit first; a string of
ones and zeros is the plainest honest model of that and fast enough for strings of a few
hundred bytes. Every read checks that the bits are there, so a short string is a precise
error, never an ``IndexError``.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.standards.errors import MalformedString

MAX_ID = 0xFFFF
"""Vendor, purpose and section ids fit 16 bits in both specifications."""


def fibonacci_bits(value: int) -> str:
    """The Fibonacci code of a positive integer: Zeckendorf bits from F(2) up, then a 1."""
    if value < 1:
        raise ValueError(f"Fibonacci coding needs a positive integer, not {value}")
    fibs = [1]
    nxt = 2
    while nxt <= value:
        fibs.append(nxt)
        nxt = fibs[-1] + fibs[-2]
    code = ["0"] * len(fibs)
    rest = value
    for i in range(len(fibs) - 1, -1, -1):
        if fibs[i] <= rest:
            code[i] = "1"
            rest -= fibs[i]
    return "".join(code) + "1"


class BitReader:
    """Reads fields in order from a bit string; errors name the field and the bit offset."""

    def __init__(self, bits: str, kind: str, where: str) -> None:
        self.bits = bits
        self.pos = 0
        self.kind = kind
        self.where = where

    def fail(self, detail: str) -> MalformedString:
        return MalformedString(self.kind, f"{self.where}: {detail}")

    def remaining(self) -> int:
        return len(self.bits) - self.pos

    def take(self, count: int, name: str) -> str:
        end = self.pos + count
        if end > len(self.bits):
            raise self.fail(
                f"{name} needs {count} bit(s) at bit {self.pos}, but only "
                f"{len(self.bits) - self.pos} remain"
            )
        chunk = self.bits[self.pos : end]
        self.pos = end
        return chunk

    def number(self, count: int, name: str) -> int:
        return int(self.take(count, name), 2) if count else 0

    def flag(self, name: str) -> bool:
        return self.take(1, name) == "1"

    def fibonacci(self, name: str) -> int:
        """A Fibonacci-coded positive integer: bits up to and including the first ``11``."""
        end = self.bits.find("11", self.pos)
        if end < 0:
            raise self.fail(f"{name}: Fibonacci code at bit {self.pos} never ends (no '11')")
        code = self.bits[self.pos : end + 1]
        self.pos = end + 2
        if len(code) > 30:  # F(31) > 2**20: far beyond any id either specification uses
            raise self.fail(f"{name}: Fibonacci code at bit {self.pos} is too long")
        a, b, value = 1, 2, 0
        for bit in code:
            if bit == "1":
                value += a
            a, b = b, a + b
        return value

    def id_list(self, count: int, name: str) -> list[int]:
        """A fixed bitfield of ``count`` bits as the sorted ids (1-based) of its set bits."""
        chunk = self.take(count, name)
        return [i + 1 for i, bit in enumerate(chunk) if bit == "1"]


class BitWriter:
    """Collects fields as bits; ``text()`` joins them."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def number(self, value: int, count: int) -> None:
        if value < 0 or value >= 1 << count:
            raise ValueError(f"{value} does not fit {count} bits")
        if count:
            self.parts.append(format(value, f"0{count}b"))

    def flag(self, value: bool) -> None:
        self.parts.append("1" if value else "0")

    def fibonacci(self, value: int) -> None:
        self.parts.append(fibonacci_bits(value))

    def id_list(self, ids: Iterable[int], count: int) -> None:
        field = ["0"] * count
        for i in ids:
            if not 1 <= i <= count:
                raise ValueError(f"id {i} is outside 1..{count}")
            field[i - 1] = "1"
        self.parts.append("".join(field))

    def raw(self, bits: str) -> None:
        self.parts.append(bits)

    def text(self) -> str:
        return "".join(self.parts)
