"""glibc malloc tuning for serving processes: a fixed mmap threshold (issue 15).

glibc serves a block of at least the mmap threshold (128 KiB at start) from a mapping of its
own, unmapped on free. But it raises the threshold to the size of each such block freed,
up to 32 MiB, so after the first forwarder batch (a ~0.8 MB JSON text of 1,000 records)
every later batch, bound parameter and big response came from the heap instead, where
freed space stays in the process: measured with bench.rss, a worker sat ~6 MB higher at
its plateau and jumped another ~11 MB after ~300k consents (101.8 MB at 1M). Setting the
threshold with ``mallopt`` pins it (and turns off the dynamic raise), so big blocks go
back to the system when freed; the cost is one mmap/munmap per big block (a few µs,
a handful per batch).

Only glibc has ``mallopt``'s M_MMAP_THRESHOLD; elsewhere (musl, macOS) this does nothing.
Called once, early in ``serve``, before threads start; forked workers inherit it.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger("gateway.malloc")

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
# glibc refuses thresholds above HEAP_MAX/2 (32 MiB on 64-bit) and returns 0.
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- only glibc has it
    except (OSError, AttributeError):
        return None
    return libc


def pin_mmap_threshold(threshold: int) -> bool:
    """Fix malloc's mmap threshold at ``threshold`` bytes; 0 keeps glibc's dynamic one.

    True when glibc took it."""
    if threshold <= 0:
        return False
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, min(threshold, MMAP_THRESHOLD_MAX)))
    if not ok:
        log.warning("malloc refused an mmap threshold of %d bytes", threshold)
    return ok
