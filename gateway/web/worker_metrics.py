"""`/metrics` of every worker: each worker serves its own text on a socket in its folder, and
the worker that answers a scrape merges them, each series labelled ``worker="<k>"``.

Prometheus' multiprocess mode only merges the client library's own metric types, through
files; the gateway's collectors read live state (outbox, forwarder, tasks) at scrape time, so
the workers are asked instead. A worker that does not answer within a second (restarting)
is left out of that scrape, and ``gateway_workers_scraped`` says how many answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from gateway.recording.outboxes import WorkerRole, own_dir

log = logging.getLogger("gateway.web")

SOCKET = "metrics.sock"
_TIMEOUT_S = 1.0
_MAX_BYTES = 16 * 1024 * 1024


def _short(fd: int) -> str:
    """A socket path short enough for AF_UNIX (108 bytes) whatever the data dir's length:
    through the folder's descriptor (Linux)."""
    return f"/proc/self/fd/{fd}/{SOCKET}"


class MetricsSocket:
    """Serves this worker's metrics text to its peers while the app runs."""

    def __init__(self, data_dir: Path, role: WorkerRole, text: Callable[[], Awaitable[bytes]]):
        self.folder = own_dir(data_dir, role)
        self._text = text
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        (self.folder / SOCKET).unlink(missing_ok=True)  # a crashed predecessor's
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._server = await asyncio.start_unix_server(self._answer, _short(fd))
        finally:
            os.close(fd)
        os.chmod(self.folder / SOCKET, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
            (self.folder / SOCKET).unlink(missing_ok=True)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await self._text())
            await writer.drain()
        except Exception as exc:  # a peer that left: its scrape goes without this worker
            log.debug("metrics for a peer failed: %s", exc)
        finally:
            writer.close()


async def _peer(folder: Path) -> bytes | None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        async with asyncio.timeout(_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(_short(fd))
            try:
                return await _read_all(reader)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    finally:
        os.close(fd)


async def _read_all(reader: asyncio.StreamReader) -> bytes | None:
    """A peer's whole text (it closes when done); None past the bound: one ``read`` returns
    as soon as some bytes arrive, so a single call could merge half a scrape."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await reader.read(65536):
        size += len(chunk)
        if size > _MAX_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def all_workers(data_dir: Path, role: WorkerRole, own: bytes) -> bytes:
    """This worker's text merged with every peer's that answers."""
    peers = [i for i in range(1, role.count + 1) if i != role.index]
    answers = await asyncio.gather(*(_peer(own_dir(data_dir, WorkerRole(i, 0))) for i in peers))
    texts = {str(role.index): own}
    texts.update({str(i): text for i, text in zip(peers, answers, strict=True) if text})
    return merge(texts)


def merge(texts: Mapping[str, bytes]) -> bytes:
    """One exposition of several workers' texts; every sample gains a ``worker`` label."""
    families: dict[str, Metric] = {}
    for worker, text in texts.items():
        for family in text_string_to_metric_families(text.decode("utf-8")):
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name] = merged
            merged.samples += [
                s._replace(labels={**s.labels, "worker": worker}) for s in family.samples
            ]
    scraped = GaugeMetricFamily(
        "gateway_workers_scraped", "Workers whose metrics this scrape holds."
    )
    scraped.add_metric([], len(texts))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([*families.values(), scraped]))
    return generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)
