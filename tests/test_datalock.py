"""One serving process per data dir: a second one fails at start-up, a dead one frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.core.errors import ConfigError
from gateway.recording.datalock import LOCK_FILE, DataDirLock
from gateway.recording.service import RecordingService
from tests.helpers import ROOT, make_settings


async def test_a_second_service_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = RecordingService(settings)
    await first.start()
    second = RecordingService(settings)
    with pytest.raises(ConfigError, match=rf"pid {os.getpid()}\b.*own GATEWAY_DATA_DIR"):
        await second.start()
    assert first.outbox.writable  # the refused one touched nothing of the first's
    await first.stop()
    await second.start()  # free again once the owner stopped
    await second.stop()


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from gateway.recording.datalock import DataDirLock; "
         "DataDirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
         str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
            DataDirLock(tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)  # a crash: no chance to clean up
        holder.wait(5)
        lock = DataDirLock(tmp_path)
        deadline = time.monotonic() + 5
        while True:
            try:
                lock.acquire()
                break
            except ConfigError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
