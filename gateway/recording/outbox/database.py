"""The outbox's SQLite file: schema, pragmas, opening, and quarantine of a damaged file."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from gateway.recording.outbox import dead_letters, idempotency

log = logging.getLogger("gateway.outbox")

FILE_NAME = "outbox.sqlite3"
# An older file is converted to incremental auto-vacuum (a VACUUM, which rewrites it) only
# while it is this small; a bigger one (a backlog) is converted at a later start.
_VACUUM_CONVERT_MAX_BYTES = 256 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL,
    queued_ns INTEGER NOT NULL,
    body BLOB NOT NULL
);
"""


def quarantine(path: Path, reason: str) -> Path:
    """Move a damaged database (and its WAL) aside so nothing in it is lost or overwritten."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}-{time.time_ns() % 1_000_000}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(str(path) + suffix)
        if part.exists():
            part.rename(Path(str(target) + suffix))
    log.error(
        "outbox %s is unreadable (%s); moved it to %s and started a fresh outbox. "
        "Records in it were NOT forwarded: inspect it with sqlite3 and re-append them.",
        path,
        reason,
        target,
    )
    return target


def connect(path: Path) -> sqlite3.Connection:
    """The owner's connection in the outbox's modes, verified, with the schema in place."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        # Before the first table exists, so a new file starts in incremental auto-vacuum:
        # pages freed by delivered records can be given back (checkpoint.py).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.DatabaseError(f"journal mode is {mode}, not wal")
        # NORMAL: commits only write to the WAL; in `power` mode the fsync helper syncs
        # the WAL after each group commit, which is what FULL would do, but off the loop.
        conn.execute("PRAGMA synchronous = NORMAL")
        # Checkpoints run in their own thread (checkpoint.py), never inside a commit on the
        # loop; they truncate the WAL to 0 bytes, and this limit caps what a WAL that SQLite
        # restarts by itself keeps on disk.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        conn.executescript(_SCHEMA + dead_letters.SCHEMA)
        idempotency.create(conn)  # converts a table made before keys had subjects
        _incremental_vacuum(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _incremental_vacuum(conn: sqlite3.Connection, path: Path) -> None:
    """Convert a file made before incremental auto-vacuum (best effort, small files only)."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
        return
    size = path.stat().st_size if path.exists() else 0
    if size > _VACUUM_CONVERT_MAX_BYTES:
        log.info("outbox %s is converted to incremental auto-vacuum once it is smaller", path)
        return
    try:  # the disk may be too full for the copy VACUUM makes: a later start tries again
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
    except sqlite3.OperationalError as exc:
        log.warning("outbox %s not converted to incremental auto-vacuum: %s", path, exc)
    else:
        log.info("outbox %s converted to incremental auto-vacuum", path)


def open_db(path: Path) -> tuple[sqlite3.Connection, Path | None]:
    """The owner's connection, and where a damaged file was moved (None if it was fine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    quarantined = None
    try:
        conn = connect(path)
    except sqlite3.DatabaseError as exc:
        quarantined = quarantine(path, str(exc))
        conn = connect(path)
    fsync_path(path.parent)  # the new WAL's directory entry must survive power loss
    return conn, quarantined


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.error("outbox rollback failed: %s", exc)


def fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # no WAL yet: nothing committed since the last checkpoint
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
