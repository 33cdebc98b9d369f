"""The audit chain's link arithmetic, shared by the stores that build chains and the walk that
checks them (gateway/audit/chain.py). Pure.

``link = sha256(prev || kind || 0x00 || digest)``: ``digest`` is the sha256 of a record's
canonical content, ``prev`` the node's previous link (``GENESIS`` first).
"""

from __future__ import annotations

import hashlib

GENESIS = bytes(32)


def link(prev: bytes, kind: str, digest: bytes) -> bytes:
    return hashlib.sha256(prev + kind.encode() + b"\x00" + digest).digest()
