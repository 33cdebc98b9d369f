"""The idempotency keys of the node's other workers, so a retry is answered wherever it lands.

Each worker keeps its keys in its own outbox, committed with their records (idempotency.py).
Under ``serve --workers N`` a retry comes on a new connection, which the kernel may give to
any worker: without this, a retry taken by another worker recorded the choice a second time.
So before a group commit records a keyed append whose key it does not hold, it looks the key
up in the other workers' outboxes: read-only lookups, over connections kept open (a WAL
reader never blocks the owner's writes), of keys younger than a day. A key found there is
answered as one of the worker's own: the first record and its receipt, or ``409`` for
another choice.

What is left open: two copies of one request in flight at the same moment on two workers
(inside one group commit, milliseconds) may both be recorded, as two copies sent to two
nodes are. A peer that cannot be read (its file locked, replaced or broken) is skipped for
that group, with a warning at most once a minute: the append is recorded rather than refused.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from gateway.recording.outbox.idempotency import FIND, Found, Triple

log = logging.getLogger("gateway.outbox")

_RECHECK_S = 5.0  # how often a peer's file is checked for having been replaced
_WARN_EVERY_S = 60.0
_BUSY_MS = 50  # the longest a lookup waits for a peer's lock (it runs on the event loop)


class _Peer:
    __slots__ = ("checked", "conn", "inode", "path", "warned")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self.inode = 0
        self.checked = 0.0
        self.warned = -_WARN_EVERY_S

    def connection(self, now: float) -> sqlite3.Connection | None:
        """An open connection to the peer's current file; None while it has none."""
        if self.conn is not None and now - self.checked < _RECHECK_S:
            return self.conn
        self.checked = now
        try:
            inode = os.stat(self.path).st_ino
        except OSError:  # not made yet, or being replaced
            self.close()
            return None
        if self.conn is not None and inode == self.inode:
            return self.conn
        self.close()  # replaced (quarantined and made anew): read the new file
        conn = sqlite3.connect(
            self.path, timeout=_BUSY_MS / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("SELECT 1 FROM idempotency LIMIT 0")  # the table exists
        except sqlite3.Error:
            conn.close()
            raise
        self.conn, self.inode = conn, inode
        return conn

    def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.close()


class PeerKeys:
    """Lookups of idempotency keys in the outboxes at ``paths`` (the other workers')."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._peers = [_Peer(Path(p)) for p in paths]

    def find(self, triples: Sequence[Triple], since_ns: int) -> list[Found]:
        """The stored answers of the keys ``(site, subject_id, key)`` created since
        ``since_ns``, each with the index of its triple; at most one per triple."""
        found: dict[int, Found] = {}
        if not triples or not self._peers:
            return []
        wanted = orjson.dumps(triples).decode()
        now = time.monotonic()
        for peer in self._peers:
            try:
                conn = peer.connection(now)
                if conn is None:
                    continue
                for row in conn.execute(FIND, (wanted, since_ns)):
                    found.setdefault(row[0], row)
            except sqlite3.Error as exc:
                peer.close()
                if now - peer.warned >= _WARN_EVERY_S:
                    peer.warned = now
                    log.warning("idempotency keys of %s not read: %s", peer.path, exc)
        return list(found.values())

    def close(self) -> None:
        for peer in self._peers:
            peer.close()
