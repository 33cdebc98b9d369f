"""The fsync helper process: answers on the loop, fails loudly, restarts, never outlives us."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
from pathlib import Path

import pytest

from gateway.core.errors import Unavailable
from gateway.recording.outbox.fsyncer import Fsyncer
from gateway.recording.outbox.group_commit import Outbox
from tests.pg import eventually, make_record


async def started(path: Path) -> Fsyncer:
    fsyncer = Fsyncer(path)
    fsyncer.start()
    fsyncer.attach(asyncio.get_running_loop())
    return fsyncer


async def fsync(fsyncer: Fsyncer) -> OSError | None:
    done: asyncio.Future[OSError | None] = asyncio.get_running_loop().create_future()
    fsyncer.request(done.set_result)
    return await asyncio.wait_for(done, 10)


def child_pid(fsyncer: Fsyncer) -> int:
    proc = fsyncer._proc
    assert proc is not None
    return proc.pid


def exited(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers signal 0; its state in /proc says it has exited.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


async def test_answers_each_request_in_order_on_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x" * 4096)
    fsyncer = await started(path)
    results = await asyncio.gather(*(fsync(fsyncer) for _ in range(20)))
    assert results == [None] * 20
    pid = child_pid(fsyncer)
    fsyncer.close()
    assert exited(pid)


async def test_a_file_not_written_yet_needs_no_sync(tmp_path: Path) -> None:
    fsyncer = await started(tmp_path / "absent-wal")
    assert await fsync(fsyncer) is None
    fsyncer.close()


async def test_an_fsync_error_is_reported_with_its_errno() -> None:
    fsyncer = await started(Path("/dev/null"))  # fsync(2) on /dev/null fails with EINVAL
    error = await fsync(fsyncer)
    assert isinstance(error, OSError)
    assert error.errno == errno.EINVAL
    fsyncer.close()


async def test_a_dead_helper_fails_what_it_owed_then_is_restarted(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x")
    fsyncer = await started(path)
    old = child_pid(fsyncer)
    os.kill(old, signal.SIGKILL)
    # Whatever was waiting, or asked before the loop saw the exit, fails: never a false success.
    error = await fsync(fsyncer)
    if error is not None:
        assert "fsync helper" in str(error)
        error = await fsync(fsyncer)  # the next request starts a new helper
    assert error is None
    assert child_pid(fsyncer) != old
    fsyncer.close()


async def test_the_helper_exits_when_the_gateway_dies(tmp_path: Path) -> None:
    fsyncer = await started(tmp_path / "wal")
    proc = fsyncer._proc
    assert proc is not None
    assert proc.stdin is not None
    proc.stdin.close()  # what the kernel does to the pipe when the gateway is killed
    await asyncio.to_thread(proc.wait, 5)
    assert proc.returncode == 0
    fsyncer._proc = None
    fsyncer.close()


async def test_outbox_answers_503_when_its_helper_dies_mid_group_and_recovers(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", durability="power")
    await outbox.open()
    assert outbox._fsyncer is not None
    await outbox.append(make_record("before"), "x")
    os.kill(child_pid(outbox._fsyncer), signal.SIGKILL)
    await asyncio.sleep(0.2)  # the loop sees the helper's pipe close
    answers = await asyncio.gather(
        *(outbox.append(make_record(f"s{i}"), "x") for i in range(20)), return_exceptions=True
    )
    # Appends after the death start a new helper and are fsynced: all of them succeed.
    assert all(not isinstance(a, BaseException) for a in answers), answers
    assert outbox.depth == 21
    await outbox.close()


async def test_outbox_refuses_appends_it_cannot_make_durable(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", durability="power")
    await outbox.open()
    assert outbox._fsyncer is not None
    outbox._fsyncer.close()
    outbox._fsyncer = Fsyncer(Path("/dev/null"))  # every fsync fails
    outbox._fsyncer.start()
    outbox._fsyncer.attach(asyncio.get_running_loop())
    with pytest.raises(Unavailable, match="cannot sync"):
        await outbox.append(make_record("unsynced"), "x")
    assert not outbox.writable
    await outbox.close()


async def test_a_dead_helper_is_replaced_by_the_supervised_watch_before_it_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.recording.outbox.group_commit._FSYNC_CHECK_S", 0.05)
    outbox = Outbox(tmp_path / "outbox.sqlite3", durability="power")
    await outbox.open()
    fsyncer = outbox._fsyncer
    assert fsyncer is not None
    first = child_pid(fsyncer)
    os.kill(first, signal.SIGKILL)  # no append is waiting: nobody would notice until one is
    await eventually(lambda: fsyncer.alive and child_pid(fsyncer) != first, within=5)
    assert outbox.tasks.status()["outbox-fsync-helper"]["up"] is True
    answer = await outbox.append(make_record("after"), "x")
    assert not answer.duplicate
    await outbox.close()
