"""The hash chain's arithmetic and its walk (pure: no I/O).

Each node has one chain over its records of every kind, in the order the store linked them
(gateway/sinks/postgres_audit.py computes the same links in the write transaction):
``link = sha256(prev || kind || 0x00 || digest)``, ``digest`` being the sha256 of the record's
canonical content and ``prev`` the node's previous link (``GENESIS`` first).

``Walker`` checks links in (node, seq) order and names the first break: a record changed
(its digest no longer gives its link), removed (a link without its record, or a gap in the
sequence), inserted or reordered (a link whose ``prev`` is not its predecessor's link).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.core.hashchain import GENESIS, link

__all__ = ["GENESIS", "Break", "Link", "Walker", "checkpoint_valid", "link", "sign_checkpoint"]


@dataclass(frozen=True)
class Link:
    node_id: str
    seq: int
    kind: str
    ref: str
    prev_hash: bytes
    hash: bytes
    digest: bytes | None  # None: the record it links is gone
    wanted: bool = True  # False: another site's link (--site), checked for its place only


@dataclass(frozen=True)
class Break:
    """The first place the chain does not hold."""

    problem: str  # changed | removed | missing_links | out_of_order | head_mismatch | unlinked
    node_id: str
    seq: int | None
    ref: str | None
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "node_id": self.node_id,
            "seq": self.seq,
            "ref": self.ref,
            "detail": self.detail,
        }


class Walker:
    """Feed links in (node_id, seq) order; ``first_break`` holds the first problem found.

    ``anchored``: the walk starts at each node's first link (seq 1, prev GENESIS); a walk
    from a point in time (``--since``) takes its first link's prev as given instead.
    """

    def __init__(self, *, anchored: bool = True) -> None:
        self.anchored = anchored
        self.checked = 0
        self.first_break: Break | None = None
        self.heads: dict[str, tuple[int, bytes]] = {}
        self._node: str | None = None
        self._seq = 0
        self._prev = GENESIS

    def feed(self, item: Link) -> Break | None:
        """Check one link; returns the break it shows, if any (the walk goes on after it)."""
        self.checked += 1
        found = self._check(item)
        self._node, self._seq, self._prev = item.node_id, item.seq, item.hash
        self.heads[item.node_id] = (item.seq, item.hash)
        if found is not None and self.first_break is None:
            self.first_break = found
        return found

    def _check(self, item: Link) -> Break | None:
        node, seq = item.node_id, item.seq
        if node != self._node:
            if not self.anchored:
                self._seq, self._prev = seq - 1, item.prev_hash
            else:
                self._seq, self._prev = 0, GENESIS
        if seq != self._seq + 1:
            return Break(
                "missing_links", node, seq, item.ref,
                f"links {self._seq + 1}..{seq - 1} of node {node!r} are gone",
            )  # fmt: skip
        if item.prev_hash != self._prev:
            return Break(
                "out_of_order", node, seq, item.ref,
                "this link does not follow its predecessor: a record was inserted, "
                "removed or moved here",
            )  # fmt: skip
        if not item.wanted:
            return None
        if item.digest is None:
            return Break("removed", node, seq, item.ref, "the linked record is gone")
        if link(item.prev_hash, item.kind, item.digest) != item.hash:
            return Break(
                "changed", node, seq, item.ref,
                "the record's content no longer gives its link: it was changed",
            )  # fmt: skip
        return None


def checkpoint_payload(heads: dict[str, tuple[int, bytes]]) -> bytes:
    """The signed bytes of a checkpoint of chain heads (canonical JSON, nodes sorted)."""
    plain = {node: [seq, h.hex()] for node, (seq, h) in sorted(heads.items())}
    return orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)


def sign_checkpoint(key: bytes, heads: dict[str, tuple[int, bytes]]) -> str:
    return hmac.new(key, checkpoint_payload(heads), hashlib.sha256).hexdigest()


def checkpoint_valid(key: bytes, heads: dict[str, tuple[int, bytes]], signature: str) -> bool:
    return hmac.compare_digest(sign_checkpoint(key, heads), signature)
