"""The URL-safe base64 alphabet as both specifications use it: 6 bits a character, no ``=``.

TC strings (and the GPP ``tcfeuv2`` section) pad their bits with zeros to a multiple of 24,
the common multiple of bytes and characters; GPP's other sections pad to whole bytes and then
to whole characters, which is shorter. The reference libraries pad that way, so strings
encoded here are byte-identical with theirs.
"""

from __future__ import annotations

import base64
import re
from typing import Literal

from gateway.standards.errors import MalformedString

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_BITS = str.maketrans({ch: format(i, "06b") for i, ch in enumerate(ALPHABET)})
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
    return text.translate(_BITS)


def encode(bits: str, padding: Padding) -> str:
    """Characters for ``bits`` after zero padding (``tcf``: to 24 bits; ``gpp``: 8, then 6)."""
    # Zero padding to whole bytes (tcf: whole 24-bit groups); the C base64 encoder then pads
    # the last 6-bit group with zeros itself, so its output less "=" is exactly the
    # characters the specifications describe.
    length = len(bits) + (-len(bits) % (24 if padding == "tcf" else 8))
    value = int(bits, 2) << (length - len(bits)) if bits else 0
    raw = value.to_bytes(length // 8, "big")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
