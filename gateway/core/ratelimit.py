"""Per-client and per-subject write limits: token buckets in bounded tables, no I/O.

One client once wrote 96,765 records in 15 s and, with the store down, filled a 2,000-record
outbox in 0.42 s, after which every visitor got 503. Writes are limited per client address
(after proxy trust; IPv6 by /64, which one subscriber usually holds whole) and per subject;
a client over its limit gets ``429`` with ``Retry-After``. A limit of 0 turns it off.

Each key's bucket holds up to ``burst`` writes and refills at ``rate`` writes a second, kept
as one number, the time the bucket will next be full ("theoretical arrival time", GCRA): the
same answers as counting tokens, in a third of the memory. A table keeps at most ``max_keys``
keys, by hash, in two flat arrays allocated by its first write (16 bytes a key, no object
per key: issue 15 measured ~180 bytes a key and 3.6 MB for a full table of 20,000 in the
OrderedDict it replaced). A key has two places, chosen by its hash; a new key takes the one
whose bucket is full soonest, which is harmless when that bucket has refilled (a full bucket
is what a new key gets) and otherwise lets that one key start afresh, the key owing the
least: a flood of new keys displaces buckets nearest to full before one a key drained.
Keys are kept by their hash (subjects by a hash of (site, subject), salted per process as
Python's str hashes are): two keys sharing a hash would only share a limit.

Limits are the node's, not a worker's: under ``serve --workers N`` the supervisor makes the
tables in anonymous shared memory before it forks (``SharedTables``), and every worker, a
restarted one too, takes from the same buckets (forked workers share the hash salt), so a
client whose connections land on several workers still gets one limit, not N. Workers update
a bucket without a lock (a worker killed holding one would stop them all): two workers taking
from one key at the same instant may both pass where one would, a race measured in
microseconds that lets a key past its limit by a write, never by N times.

Pure: the caller passes the client address it located and the subject it validated, so the
check sits wherever both are known (the recording path, the admin endpoints).
"""

from __future__ import annotations

import math
import mmap
import socket
import time
from array import array
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol, TypeVar

from gateway.core.errors import BadRequest
from gateway.core.settings import Settings

# The due time of a place no key holds: zero, so that zeroed memory is an empty table (a due
# time is a monotonic clock reading plus an interval, never 0).
_EMPTY = 0.0
T = TypeVar("T")


class Column(Protocol[T]):
    """A table's column: an ``array`` of the process, or a view of shared memory."""

    def __getitem__(self, index: int, /) -> T: ...
    def __setitem__(self, index: int, value: T, /) -> None: ...
    def __len__(self) -> int: ...


Columns = tuple[Column[int], Column[float]]  # a table: its keys' hashes, their due times


def places(max_keys: int) -> int:
    """Places of a table of ``max_keys`` keys: sets of two (one place when max_keys is 1)."""
    ways = min(2, max_keys)
    return (max_keys // ways) * ways


# The node's limit tables (SharedTables), by name: the recording path's and the rights
# endpoints' (rights/limits.py).
NODE_TABLES = (
    "client", "admin", "subject",
    "rights_client", "rights_subject", "rights_codes", "rights_client_codes",
)  # fmt: skip


class SharedTables:
    """Token-bucket tables in anonymous shared memory (``MAP_SHARED``), made by the supervisor
    before it forks the workers, which inherit the mapping: a table taken from here is the
    node's. Zero pages until written: a table no worker uses costs no memory."""

    def __init__(self, max_keys: int, names: Sequence[str] = NODE_TABLES) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self.names = tuple(names)
        self._column = 8 * places(max_keys)  # bytes of one column
        self._memory = mmap.mmap(-1, 2 * self._column * len(self.names))

    def table(self, name: str) -> Columns:
        """The ``(hashes, due times)`` columns of table ``name`` (one of ``names``)."""
        start = 2 * self._column * self.names.index(name)
        view = memoryview(self._memory)
        hashes = view[start : start + self._column].cast("q")
        due = view[start + self._column : start + 2 * self._column].cast("d")
        return hashes, due


class TokenBuckets:
    """``take(key, now)``: 0.0 when the request may pass, else the seconds until it may."""

    __slots__ = ("_due", "_hash", "_sets", "_ways", "interval", "max_keys", "tolerance")

    def __init__(
        self,
        rate: float,
        burst: float,
        max_keys: int,
        shared: Columns | None = None,
    ) -> None:
        """``shared``: the table's columns in the node's shared memory (SharedTables.table)
        instead of arrays of this process."""
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be positive, burst and max_keys at least 1")
        self.interval = 1.0 / rate  # seconds one write takes from the bucket
        self.tolerance = (burst - 1) * self.interval  # how far ahead of time a burst may run
        self.max_keys = max_keys
        # Places ``2 * set`` and ``2 * set + 1`` (one place when max_keys is 1): their key's
        # hash, and the time its bucket is full again (_EMPTY: no key).
        self._ways = min(2, max_keys)
        self._sets = places(max_keys) // self._ways
        # Allocated by the first take: a worker has seven tables, most never written.
        self._hash: Column[int] = array("q")
        self._due: Column[float] = array("d")
        if shared is not None:
            if not len(shared[0]) == len(shared[1]) == places(max_keys):
                raise ValueError("the shared table was made for another max_keys")
            self._hash, self._due = shared

    def _allocate(self) -> None:
        n = places(self.max_keys)
        self._hash = array("q", [0]) * n  # sized exactly (from bytes, arrays over-allocate)
        self._due = array("d", [_EMPTY]) * n

    def take(self, key: Hashable, now: float) -> float:
        h = hash(key)
        if not len(self._due):
            self._allocate()
        due, hashes = self._due, self._hash
        first = (h % self._sets) * self._ways
        place = first
        if hashes[place] != h or due[place] == _EMPTY:
            place = first + self._ways - 1
            if hashes[place] != h or due[place] == _EMPTY:
                # A new key, always in the first place: it displaces the key whose bucket is
                # full soonest (none if a place is empty); on a tie the older of the two,
                # which the second place holds.
                if due[first] >= due[place]:
                    hashes[place] = hashes[first]
                    due[place] = due[first]
                hashes[first] = h
                due[first] = now + self.interval
                return 0.0
        full_at = due[place]
        if full_at < now:
            full_at = now
        wait = full_at - now - self.tolerance
        if wait > 0:
            return wait  # refused: the bucket is unchanged
        due[place] = full_at + self.interval
        return 0.0

    def __len__(self) -> int:
        """Keys held."""
        return sum(1 for i in range(len(self._due)) if self._due[i] != _EMPTY)


def retry_after(wait: float) -> int:
    """Whole seconds for a Retry-After header: rounded up, at least 1."""
    return max(1, math.ceil(wait))


class RateLimited(BadRequest):
    """429: this client or subject wrote too often; ``retry_after`` seconds until it may."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__("rate_limited", detail, status_code=429)
        self.retry_after = retry_after


def client_key(ip: str | None) -> str | bytes:
    """The bucket of an address: IPv4 as is, IPv6 by its /64 (canonical text in, from proxy
    trust); no address (a Unix socket) shares one bucket."""
    if not ip:
        return ""
    if ":" not in ip:
        return ip
    try:
        return socket.inet_pton(socket.AF_INET6, ip)[:8]
    except (OSError, ValueError):
        return ip


def node_buckets(
    count: int,
    seconds: float,
    burst: int,
    settings: Settings,
    shared: SharedTables | None,
    name: str,
) -> TokenBuckets | None:
    """Buckets of ``count`` writes per ``seconds`` after a burst (None: a count of 0 turns the
    limit off), in table ``name`` of the node's ``shared`` memory, or the process's."""
    if count <= 0:
        return None
    columns = shared.table(name) if shared is not None else None
    return TokenBuckets(count / seconds, max(burst, 1), settings.rate_limit_clients, columns)


class WriteLimits:
    """The gateway's write limits; ``check`` raises RateLimited for a client over its limit.
    ``shared``: the node's tables (workers), else the limits are this process's."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedTables | None = None,
    ) -> None:
        per_client = (settings.client_writes_per_minute, 60.0, settings.client_write_burst)
        self.by_client = node_buckets(*per_client, settings, shared, "client")
        # Admin writes from a client have buckets of their own, so that visitors behind the
        # same address (an office) cannot starve a reload, nor a reload loop their consents.
        self.admin_by_client = node_buckets(*per_client, settings, shared, "admin")
        self.by_subject = node_buckets(
            settings.subject_writes_per_minute, 60.0, settings.subject_write_burst, settings,
            shared, "subject",
        )  # fmt: skip
        self.clock = clock

    def check(self, ip: str | None, site: str, subject: str) -> None:
        """Take one write from the client's bucket and the subject's."""
        now = self.clock()
        if self.by_client is not None:
            wait = self.by_client.take(client_key(ip), now)
            if wait:
                raise RateLimited("too many writes from this address; slow down", retry_after(wait))
        if self.by_subject is not None:
            wait = self.by_subject.take(hash((site, subject)), now)
            if wait:
                raise RateLimited("too many writes for this subject; slow down", retry_after(wait))

    def check_admin(self, ip: str | None) -> None:
        """Take one admin write from the client's admin bucket."""
        if self.admin_by_client is not None:
            wait = self.admin_by_client.take(client_key(ip), self.clock())
            if wait:
                raise RateLimited("too many admin changes from this address", retry_after(wait))
