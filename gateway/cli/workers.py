"""`consent-gateway serve --workers N`: N serving processes on one port under a supervisor.

The supervisor binds the listening socket once and forks the workers, which all accept from
it (one queue: a connection waiting when a worker dies is taken by another, which
SO_REUSEPORT's per-socket queues would reset). It owns the data dir (``gateway.lock``) and
resolves the deployment's keys before the first fork (recording/keyring.py), so every worker
signs and derives subject ids alike, and makes the write limits' tables in shared memory
(core/ratelimit.py), so a client has one limit on the node, not one per worker, and the
region where each worker publishes the idempotency keys it records (recording/
recent_keys.py), so a retry another worker takes is answered from the first record. Worker
``k`` owns ``<data_dir>/worker-<k>``'s outbox (recording/outboxes.py, which also drains
the outboxes of a worker count no longer used).

It restarts a worker that exits or is killed, after a jittered exponential backoff (0.5 s,
doubling, capped at ``GATEWAY_TASK_MAX_BACKOFF``; reset once a worker ran that long). On
SIGTERM (or SIGINT, SIGHUP) it closes its copy of the socket and sends SIGTERM to every
worker, which stops accepting, finishes its requests, drains its forwarder for
``GATEWAY_SHUTDOWN_DRAIN`` seconds and exits; a worker still there long after that is
killed. Workers die with the supervisor (PR_SET_PDEATHSIG), so a supervisor killed with -9
leaves no worker serving beside the next one. The supervisor is single-threaded and never
runs an event loop while workers exist, so forking it is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import random
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from gateway.core.errors import ConfigError
from gateway.core.ratelimit import SharedTables
from gateway.core.settings import Settings
from gateway.core.tasks import backoff_delay
from gateway.recording import keyring
from gateway.recording.datalock import DataDirLock
from gateway.recording.outboxes import WorkerRole
from gateway.recording.recent_keys import RecentKeys

log = logging.getLogger("gateway.workers")

RunWorker = Callable[[Settings, WorkerRole, socket.socket], int]
_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_FIRST_BACKOFF = 0.5
_KILL_AFTER = 15.0  # seconds past the drain before a worker that will not exit is killed
_PR_SET_PDEATHSIG = 1
_STARTUP_FAILURE = 3  # uvicorn's exit code when the app's start-up fails


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, bounded by a cgroup v2 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, math.floor(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, count)


def worker_count(setting: int) -> int:
    """The number of workers ``GATEWAY_WORKERS`` asks for (0: ``auto``)."""
    return setting if setting > 0 else usable_cpus()


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The shared listening socket, inherited by every worker."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def supervise(settings: Settings, count: int, run_worker: RunWorker) -> int:
    """Run ``count`` workers until SIGTERM/SIGINT; the exit code of ``serve``."""
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    try:
        try:  # before any fork: one key for all
            settings = keyring.pinned(settings, asyncio.run(keyring.resolve(settings)))
        except keyring.KeysUnavailable as exc:  # each worker reads it once it can
            log.warning("workers start without the shared receipt key: %s", exc)
        if settings.max_connections > 0:  # the node's cap, shared out between the workers
            settings = settings.replace(max_connections=math.ceil(settings.max_connections / count))
        try:
            sock = listen(settings.host, settings.port)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}",
                hint="another process may use the port: pick another with --port",
            ) from exc
        log.info(
            "supervisor %d: %d workers on http://%s:%d", os.getpid(), count, settings.host,
            settings.port,
        )  # fmt: skip
        # The node's write limits, one table for every worker (made before the first fork).
        limits = SharedTables(settings.rate_limit_clients)
        # And the idempotency keys each records, so a retry another worker takes is answered.
        keys = RecentKeys(count)
        return WorkerPool(settings, count, sock, run_worker, lock, limits, keys).run()
    finally:
        lock.release()


class WorkerPool:
    """The supervisor's loop: fork, reap, restart with backoff, drain on a signal."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        sock: socket.socket,
        run_worker: RunWorker,
        lock: DataDirLock,
        limits: SharedTables | None = None,
        keys: RecentKeys | None = None,
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.keys = keys
        self.count = count
        self.sock: socket.socket | None = sock
        self.run_worker = run_worker
        self.lock = lock
        self.children: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # index -> monotonic start
        self.attempts: dict[int, int] = {}  # index -> restarts in a row
        self.due: dict[int, float] = {}  # index -> monotonic time of its restart
        self.restarts: dict[int, int] = {}  # index -> restarts since the supervisor started
        self.never_started: set[int] = set()  # first runs that failed at start-up (exit 3)
        self._rng = random.Random()  # noqa: S311 -- jitter, not a secret
        self._pid = os.getpid()

    def run(self) -> int:
        if threading.active_count() > 1:  # a fork copies no other thread: none may exist
            log.warning("supervisor: %d threads before forking", threading.active_count())
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for index in range(1, self.count + 1):
                self._spawn(index)
            return self._loop()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def _loop(self) -> int:
        while True:
            now = time.monotonic()
            for index, at in sorted(self.due.items()):
                if at <= now:
                    del self.due[index]
                    self._spawn(index)
            wait = min((at - now for at in self.due.values()), default=1.0)
            info = signal.sigtimedwait(_SIGNALS, max(0.01, min(wait, 1.0)))
            self._reap()
            if len(self.never_started) == self.count:
                # Every worker's first start failed (settings, store schema, …): as a single
                # process would, stop with uvicorn's start-up failure code instead of looping.
                log.error("supervisor: no worker could start; see the errors above")
                self._shutdown(forward=True)
                return _STARTUP_FAILURE
            if info is None or info.si_signo == signal.SIGCHLD:
                continue
            # SIGINT or SIGHUP from a terminal (si_pid 0) reached the workers too: do not send
            # a second signal, which uvicorn takes as "exit now, drop the requests".
            forward = info.si_signo == signal.SIGTERM or info.si_pid != 0
            return self._shutdown(forward)

    def _spawn(self, index: int) -> None:
        assert self.sock is not None
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                _die_with(self._pid)
                self.lock.release()  # its copy only: the supervisor keeps holding it
                restarts = self.restarts.get(index, 0)
                role = WorkerRole(index, self.count, restarts, self.limits, self.keys)
                code = self.run_worker(self.settings, role, self.sock)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        self.children[pid] = index
        self.started[index] = time.monotonic()
        log.info("worker %d started (pid %d)", index, pid)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.children.pop(pid, None)
            if index is None:
                continue
            self._exited(index, pid, status)

    def _exited(self, index: int, pid: int, status: int) -> None:
        ran = time.monotonic() - self.started.get(index, 0.0)
        cap = self.settings.task_max_backoff
        if ran > max(cap, 1.0):
            self.attempts[index] = 0  # it ran well for a while: start the backoff over
        attempt = self.attempts.get(index, 0)
        self.attempts[index] = attempt + 1
        if attempt == 0 and index not in self.restarts and _exit_code(status) == _STARTUP_FAILURE:
            self.never_started.add(index)
        if self.sock is None:  # shutting down: no restart
            return
        delay = backoff_delay(attempt, cap=cap, rng=self._rng, base=_FIRST_BACKOFF)
        self.due[index] = time.monotonic() + delay
        self.restarts[index] = self.restarts.get(index, 0) + 1
        log.error(
            "worker %d (pid %d) %s after %.1fs; restarting in %.2fs",
            index, pid, _describe(status), ran, delay,
        )  # fmt: skip

    def _shutdown(self, forward: bool) -> int:
        """Close the socket, let every worker drain, and wait for them (then kill)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.due.clear()
        log.info("supervisor: stopping %d worker(s)", len(self.children))
        if forward:
            self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_drain + _KILL_AFTER
        while self.children and time.monotonic() < deadline:
            signal.sigtimedwait(_SIGNALS, 0.2)
            self._reap()
        if self.children:
            log.error("supervisor: killing %d worker(s) that did not exit", len(self.children))
            self._signal_all(signal.SIGKILL)
            while self.children:
                pid, _ = os.waitpid(-1, 0)
                self.children.pop(pid, None)
        return 0

    def _signal_all(self, signo: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signo)


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when the supervisor dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _exit_code(status: int) -> int | None:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else None


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with {os.waitstatus_to_exitcode(status)}"
