"""One serving process per data dir: an exclusive lock on ``GATEWAY_DATA_DIR/gateway.lock``.

The outbox has one owner: its group commits, its in-memory hand-over to the forwarder and its
claim cursor all assume that no other serving process appends to or forwards from the same
files. A second process started on the same data dir (a copied unit file, `uvicorn
--workers 2`) would not lose records (the sinks are idempotent) but would forward them twice
and hide the mistake; the lock makes it fail at start-up with a clear error instead. The
kernel drops the lock when the process dies, so a crash never leaves it behind. The
maintenance commands (`consent-gateway outbox status|replay`) do not take it: they are meant
to run beside the gateway.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from gateway.core.errors import ConfigError

LOCK_FILE = "gateway.lock"
# Each outbox has a lock of its own beside it (`consent-gateway serve --workers N`: the
# supervisor holds the data dir's, each worker its outbox's; see recording/outboxes.py).
OUTBOX_LOCK_FILE = "outbox.lock"


class DataDirLock:
    """Held from ``acquire`` to ``release``; the file names the holder's pid for operators."""

    def __init__(self, data_dir: Path, name: str = LOCK_FILE) -> None:
        self.path = Path(data_dir) / name
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock or raise ConfigError naming the process that holds it; ``wait``:
        seconds to keep trying first (a previous owner that is still exiting)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._try()
            except ConfigError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.1)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _try(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"another gateway process (pid {holder}) is serving from this data dir",
                hint="give each gateway process its own GATEWAY_DATA_DIR",
                where=str(self.path.parent),
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the lock
