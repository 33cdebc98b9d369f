"""A worker's memory stays bounded (issue 15: RSS <= 80 MB after 1M consents).

Each test pins one cause measured with bench.rss: malloc's mmap threshold stays where
``serve`` pins it, the embedded store's connections keep small page caches and run in
threads of their own, and a worker on the embedded store does not import the PostgreSQL
driver.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gateway.core import malloc
from gateway.core.settings import Settings
from gateway.recording.outbox import checkpoint
from gateway.sinks import sqlite_common
from gateway.sinks.directory_sqlite import SqliteDirectory
from gateway.sinks.rights_sqlite import SqliteRights
from gateway.sinks.sqlite import SqliteStore
from tests.helpers import unavailable

ROOT = Path(__file__).resolve().parents[1]
GLIBC = malloc._glibc() is not None

# In a fresh interpreter: free one 1 MiB block, then print whether the next 1 MiB block got a
# mapping of its own (1) or came from the heap (0). mallinfo2's hblks counts the mappings.
_PROBE = """
import ctypes, sys
from gateway.core.malloc import pin_mmap_threshold

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "pin":
    assert pin_mmap_threshold(128 * 1024)
libc.free(libc.malloc(1 << 20))  # glibc's dynamic threshold rises past 1 MiB here
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
print(libc.mallinfo2().hblks - before)
libc.free(block)
"""


def _next_big_block_mapped(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_pinned_mmap_threshold_keeps_big_blocks_returnable_after_a_big_free() -> None:
    """Memory threat: after one big free, glibc served every later batch buffer from the heap,
    where freed space stays in the process (a worker ~15 MB bigger after 1M consents)."""
    if not GLIBC:  # the shipped image and CI are glibc: there this never skips
        unavailable("mallopt's M_MMAP_THRESHOLD is glibc's")
    assert _next_big_block_mapped("dynamic") == 0  # the threat, as glibc behaves by default
    assert _next_big_block_mapped("pin") == 1


def test_mmap_threshold_setting_defaults_to_128_kib_and_zero_leaves_malloc_alone() -> None:
    assert Settings().malloc_mmap_threshold == 128 * 1024
    assert malloc.pin_mmap_threshold(0) is False


@pytest.mark.parametrize("cls", [SqliteStore, SqliteDirectory, SqliteRights])
async def test_store_connections_have_a_small_page_cache_and_a_thread_of_their_own(
    tmp_path: Path, cls: type[sqlite_common.SqliteOwned]
) -> None:
    """Memory threat: three connections at SQLite's 2,000 KiB default, their pages spread
    over every thread of the loop's executor (one malloc arena each)."""
    owned = cls(tmp_path / "store.sqlite3")
    await owned.open()
    try:

        def probe(conn: sqlite3.Connection) -> tuple[int, str]:
            size = conn.execute("PRAGMA cache_size").fetchone()[0]
            return size, threading.current_thread().name

        size, name = await owned._call(probe)
        assert size == -sqlite_common.CACHE_KIB
        assert name.startswith(cls.thread_name)
        again = await owned._call(probe)
        assert again[1] == name  # one thread for the connection, call after call
    finally:
        await owned.close()
    assert owned._thread is None


async def test_checkpoint_connection_has_a_small_page_cache(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    sqlite3.connect(path).execute("PRAGMA journal_mode = WAL").fetchall()
    checkpointer = checkpoint.Checkpointer(path)
    conn = checkpointer._connection()
    try:
        assert conn.execute("PRAGMA cache_size").fetchone()[0] == -checkpoint.CACHE_KIB
    finally:
        conn.close()


def test_embedded_store_worker_without_webhook_imports_no_postgresql_driver_nor_http_client(
    tmp_path: Path,
) -> None:
    """asyncpg (~3 MB in a worker) is imported only when GATEWAY_STORE_URL names PostgreSQL,
    httpx (~2 MB) only when GATEWAY_WEBHOOK_URL is set: checked after a started app's
    lifespan, in a fresh interpreter."""
    code = f"""
import asyncio, sys
from pathlib import Path
from gateway.app import create_app
from tests.helpers import make_settings

async def lifespan() -> None:  # the app's start and stop, as uvicorn drives them
    app = create_app(make_settings(Path({str(tmp_path)!r})))
    inbox: asyncio.Queue = asyncio.Queue()
    await inbox.put({{"type": "lifespan.startup"}})
    sent = []

    async def send(message):
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            await inbox.put({{"type": "lifespan.shutdown"}})

    await app({{"type": "lifespan", "asgi": {{"version": "3.0"}}, "state": {{}}}}, inbox.get, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"], sent

asyncio.run(lifespan())
print(sorted(m for m in ("asyncpg", "httpx") if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
