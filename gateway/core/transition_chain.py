"""What a rights-request transition commits to in the audit chain (pure: no I/O).

Each site has one chain of its rights transitions, node ``rights:<site>``, in the order the
store linked them (gateway/sinks/rights_chain.py, in the transaction that stores the
transition). A transition's digest is ``split_digest`` (gateway/audit/chain.py) with the
free-text ``reason`` as its personal part: the reason may name the subject, so it can be
erased (set to NULL) while the link stays verifiable from the personal digest kept beside the
transition. Everything else (request, seq, site, states, actor, time) is the core: changing
it, or the kept digest of an erased reason, breaks the link.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from gateway.core.hashchain import personal_digest, split_digest

KIND = "rights"
PERSONAL = ("reason",)
_NODE_PREFIX = "rights:"
_ERASED_WITHOUT_DIGEST = bytes(32)  # an erased reason with no kept digest: cannot match


def node_of(site: str) -> str:
    """The chain node of a site's rights transitions."""
    return _NODE_PREFIX + site


def is_rights_node(node_id: str) -> bool:
    return node_id.startswith(_NODE_PREFIX)


def ref_of(request_id: str, seq: int) -> str:
    """A transition's reference in the chain (request ids are UUIDs: no ``/``)."""
    return f"{request_id}/{seq}"


def content(
    request_id: str,
    seq: int,
    site: str,
    from_state: str | None,
    to_state: str,
    actor: str,
    reason: str | None,
    at: str,
) -> dict[str, Any]:
    """A transition as its digest sees it (``record_id`` is its chain reference)."""
    return {
        "record_id": ref_of(request_id, seq),
        "site": site,
        "from_state": from_state,
        "to_state": to_state,
        "actor": actor,
        "reason": reason,
        "at": at,
    }


def personal(data: Mapping[str, Any]) -> bytes:
    """The digest kept beside a transition, for the day its reason is erased."""
    return personal_digest(data, PERSONAL)


def digest(data: Mapping[str, Any], kept: bytes | None) -> bytes:
    """The digest a transition gives now: from its reason while it holds one, from the kept
    personal digest once the reason is erased (NULL)."""
    if data.get("reason") is None:
        return split_digest(data, PERSONAL, kept or _ERASED_WITHOUT_DIGEST)
    return split_digest(data, PERSONAL, personal(data))


# Chain nodes of rights transitions, as a key range (node ids sort bytewise: COLLATE "C").
NODE_LOW, NODE_HIGH = _NODE_PREFIX, "rights;"


class Columns(Protocol):
    """A row whose columns are read by name (a mapping, asyncpg's Record, sqlite3.Row)."""

    def __getitem__(self, name: str, /) -> Any: ...


def row_digest(row: Columns) -> bytes | None:
    """The digest a chain row's transition gives now (None: the transition is gone). ``row``
    has the transition's columns as the readers name them (``t_seq``, ``t_site``, ``kept``)."""
    if row["request_id"] is None:
        return None
    data = content(row["request_id"], row["t_seq"], row["t_site"], row["from_state"],
                   row["to_state"], row["actor"], row["reason"], row["at"])  # fmt: skip
    kept = row["kept"]
    return digest(data, None if kept is None else bytes(kept))
