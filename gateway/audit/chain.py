"""The hash chain's arithmetic and its walk (pure: no I/O).

Each node has one chain over its records of every kind, in the order the store linked them
(gateway/sinks/postgres_audit.py computes the same links in the write transaction):
``link = sha256(prev || kind || 0x00 || digest)``, ``digest`` being the sha256 of the record's
canonical content and ``prev`` the node's previous link (``GENESIS`` first).

``Walker`` checks links in (node, seq) order and names the first break: a record changed
(its digest no longer gives its link), removed (a link without its record, or a gap in the
sequence), inserted or reordered (a link whose ``prev`` is not its predecessor's link).

Retention (gateway/audit/retention.py) retires each node's links up to a point: a signed
retention checkpoint names that point (``Base``: its seq and link) and a digest of the
retired links it keeps (their records are still needed). The walk then starts each node at
its base instead of the genesis, checks each kept retired link on its own, and their digest
against the signed one.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.core.hashchain import GENESIS, link, personal_digest, split_digest

__all__ = [
    "GENESIS",
    "Break",
    "Link",
    "Walker",
    "checkpoint_valid",
    "link",
    "personal_digest",
    "sign_checkpoint",
    "split_digest",
]


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
class Base:
    """Where a node's walk starts after retention, and what it kept below that point."""

    seq: int
    hash: bytes
    kept_digest: str
    kept: int

    def as_json(self) -> list[Any]:
        return [self.seq, self.hash.hex(), self.kept_digest, self.kept]

    @classmethod
    def from_json(cls, value: list[Any]) -> Base:
        return cls(int(value[0]), bytes.fromhex(value[1]), str(value[2]), int(value[3]))


class KeptDigest:
    """sha256 over (seq, link) of a node's kept retired links, in seq order."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.count = 0

    def add(self, seq: int, link_hash: bytes) -> None:
        self._h.update(seq.to_bytes(8, "big") + link_hash)
        self.count += 1

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def retention_payload(retained_before: str, bases: dict[str, Base]) -> bytes:
    """The signed bytes of a retention checkpoint (canonical JSON, nodes sorted)."""
    plain = {n: b.as_json() for n, b in sorted(bases.items())}
    return orjson.dumps(
        {"retained_before": retained_before, "bases": plain}, option=orjson.OPT_SORT_KEYS
    )


def sign_retention(key: bytes, retained_before: str, bases: dict[str, Base]) -> str:
    return hmac.new(key, retention_payload(retained_before, bases), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Break:
    """The first place the chain does not hold."""

    problem: str  # changed | removed | missing_links | out_of_order | head_mismatch | unlinked
    node_id: str
    seq: int | None
    ref: str | None
    detail: str
    kind: str | None = None  # the record kind of the link or record (consent, rights, …)

    def as_json(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "kind": self.kind,
            "node_id": self.node_id,
            "seq": self.seq,
            "ref": self.ref,
            "detail": self.detail,
        }


class Walker:
    """Feed links in (node_id, seq) order; ``first_break`` holds the first problem found.

    ``anchored``: the walk starts at each node's first link (seq 1, prev GENESIS), or at its
    retention ``bases``; a walk from a point in time (``--since``) takes its first link's
    prev as given instead.
    """

    def __init__(self, *, anchored: bool = True, bases: dict[str, Base] | None = None) -> None:
        self.anchored = anchored
        self.bases = (bases or {}) if anchored else {}
        self.checked = 0
        self.first_break: Break | None = None
        self.heads: dict[str, tuple[int, bytes]] = {
            n: (b.seq, b.hash) for n, b in self.bases.items()
        }
        self.kept = {n: KeptDigest() for n in self.bases}
        self._node: str | None = None
        self._seq = 0
        self._prev = GENESIS

    def feed(self, item: Link) -> Break | None:
        """Check one link; returns the break it shows, if any (the walk goes on after it)."""
        self.checked += 1
        base = self.bases.get(item.node_id)
        if base is not None and item.seq <= base.seq:
            self.kept[item.node_id].add(item.seq, item.hash)
            found = self._content(item)
        else:
            found = self._check(item)
            self._node, self._seq, self._prev = item.node_id, item.seq, item.hash
        if item.seq >= self.heads.get(item.node_id, (0, GENESIS))[0]:
            self.heads[item.node_id] = (item.seq, item.hash)
        if found is not None and self.first_break is None:
            self.first_break = found
        return found

    def retired_breaks(self) -> list[Break]:
        """After the walk: nodes whose kept retired links are not the ones retention signed."""
        found = []
        for node, base in sorted(self.bases.items()):
            got = self.kept[node]
            if (got.hexdigest(), got.count) != (base.kept_digest, base.kept):
                found.append(Break(
                    "retired_mismatch", node, base.seq, None,
                    f"retention kept {base.kept} link(s) up to link {base.seq}; "
                    f"{got.count} are there, or they were rewritten",
                ))  # fmt: skip
        for b in found:
            if self.first_break is None:
                self.first_break = b
        return found

    def _check(self, item: Link) -> Break | None:
        node, seq = item.node_id, item.seq
        if node != self._node:
            if not self.anchored:
                self._seq, self._prev = seq - 1, item.prev_hash
            elif node in self.bases:
                self._seq, self._prev = self.bases[node].seq, self.bases[node].hash
            else:
                self._seq, self._prev = 0, GENESIS
        if seq != self._seq + 1:
            return Break(
                "missing_links", node, seq, item.ref,
                f"links {self._seq + 1}..{seq - 1} of node {node!r} are gone", item.kind,
            )  # fmt: skip
        if item.prev_hash != self._prev:
            return Break(
                "out_of_order", node, seq, item.ref,
                "this link does not follow its predecessor: a record was inserted, "
                "removed or moved here", item.kind,
            )  # fmt: skip
        return self._content(item)

    def _content(self, item: Link) -> Break | None:
        node, seq = item.node_id, item.seq
        if not item.wanted:
            return None
        if item.digest is None:
            return Break("removed", node, seq, item.ref, "the linked record is gone", item.kind)
        if link(item.prev_hash, item.kind, item.digest) != item.hash:
            return Break(
                "changed", node, seq, item.ref,
                "the record's content no longer gives its link: it was changed", item.kind,
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
