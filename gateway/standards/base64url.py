"""The URL-safe base64 alphabet as both specifications use it: 6 bits a character, no ``=``.

TC strings (and the GPP ``tcfeuv2`` section) pad their bits with zeros to a multiple of 24,
the common multiple of bytes and characters; GPP's other sections pad to whole bytes and then
to whole characters, which is shorter. The reference libraries pad that way, so strings
encoded here are byte-identical with theirs.
"""

from __future__ import annotations

import re
from typing import Literal

from gateway.standards.errors import MalformedString

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_BITS = {ch: format(i, "06b") for i, ch in enumerate(ALPHABET)}
_BAD = re.compile(r"[^A-Za-z0-9_-]")

Padding = Literal["tcf", "gpp"]


def decode(text: str, kind: str, where: str) -> str:
    """The bits of one segment; any character outside the alphabet is a precise error."""
    if not text:
        raise MalformedString(kind, f"{where} is empty")
    bad = _BAD.search(text)
    if bad:
        raise MalformedString(
            kind,
            f"{where} has {bad.group()!r} at character {bad.start() + 1}, "
            "outside the base64url alphabet",
        )
    return "".join(_BITS[ch] for ch in text)


def encode(bits: str, padding: Padding) -> str:
    """Characters for ``bits`` after zero padding (``tcf``: to 24 bits; ``gpp``: 8, then 6)."""
    length = len(bits)
    if padding == "tcf":
        length += -length % 24
    else:
        length += -length % 8
        length += -length % 6
    bits = bits.ljust(length, "0")
    return "".join(ALPHABET[int(bits[i : i + 6], 2)] for i in range(0, length, 6))
