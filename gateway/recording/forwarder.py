"""The forwarder: claims batches from the outbox, delivers them to every sink, then acks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.core.record_codec import Record, decode_object, decode_record
from gateway.core.tasks import BASE_BACKOFF, Supervised, Supervisor, backoff_delay
from gateway.recording.outbox.group_commit import Outbox
from gateway.recording.outbox.items import OutboxItem
from gateway.sinks.base import JsonSink, ObjectSink, PermanentSinkError, Sink, StoredSink

log = logging.getLogger("gateway.forwarder")

_IDLE_POLL = 1.0
# The forwarder's work on the event loop (claiming, decoding, acking) runs in slices of this
# many records, yielding to the loop between them: measured, a 1,000-record batch in one
# piece held the loop ~5 ms (claim 1.2, decode 1.6, ack 2.6) and set the recording p99.
SLICE = 200


class Forwarder:
    """Background workers per outbox; at least once into each sink, ack after all commit.

    The workers run under ``tasks`` (the caller's supervisor, or one of its own): a worker
    that fails is logged, counted and restarted with backoff, and claims from the oldest
    undelivered record again."""

    def __init__(
        self,
        outbox: Outbox,
        sinks: Sequence[Sink],
        *,
        batch_size: int = 1000,
        max_backoff: float = 60.0,
        base_backoff: float = BASE_BACKOFF,
        rng: random.Random | None = None,
        concurrency: int = 2,
        linger: float = 0.0,
        tasks: Supervisor | None = None,
    ) -> None:
        self.outbox = outbox
        self.sinks = list(sinks)
        self.batch_size = batch_size
        self.max_backoff = max_backoff
        self.base_backoff = base_backoff
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not a secret
        # Two workers overlap decoding one batch with the store writing another (measured
        # ~1.6x throughput into PostgreSQL); order across batches does not matter because
        # every sink is idempotent and the latest state compares timestamps.
        self.concurrency = concurrency
        # Wait this long to fill a partial batch: under load a batch then carries hundreds
        # of records instead of a handful, so each transaction costs far less per record.
        self.linger = linger
        self.tasks = tasks if tasks is not None else Supervisor(max_backoff=max_backoff)
        self._workers: list[Supervised] = []
        self._draining = False
        self.batches = 0
        self.forwarded = 0
        self.failures = 0  # transient sink failures
        self.outbox_failures = 0  # failed acks and dead-letter moves (the outbox's own disk)
        self.dead_lettered = 0
        self.last_error: str | None = None
        self.last_delivery: float | None = None  # monotonic time of the last ack
        self.delays: list[float] = []  # recent backoff sleeps, newest last (for ops and tests)

    @property
    def running(self) -> bool:
        """A worker is delivering (not finished, not waiting to restart after a failure)."""
        return any(w.up for w in self._workers)

    def start(self) -> None:
        self.outbox.rewind()
        self._draining = False
        self._workers = [
            self.tasks.start(f"forwarder-{i}", self._run) for i in range(self.concurrency)
        ]

    async def stop(self, drain: float) -> None:
        """Deliver what is queued for at most ``drain`` seconds, then stop."""
        workers, self._workers = self._workers, []
        tasks = [w.task for w in workers if w.task is not None]
        if not tasks:
            return
        self._draining = True
        self.outbox.arrived.set()
        _, pending = await asyncio.wait(tasks, timeout=drain)
        if pending:
            log.warning(
                "forwarder stopped after %.1fs with %d records still in the outbox; "
                "they are delivered at the next start",
                drain, self.outbox.depth,
            )  # fmt: skip
        await self.tasks.stop(*(w.name for w in workers))

    async def _run(self) -> None:
        try:
            await self._work()
        except Exception:
            # What this worker had claimed is claimed again (sinks are idempotent).
            self.outbox.rewind()
            raise

    async def _work(self) -> None:
        while True:
            self.outbox.arrived.clear()
            try:
                items = await self._claim(self.batch_size)
            except Exception as exc:  # the outbox is local: log loudly, retry, never die
                self.outbox_failures += 1
                self.last_error = f"outbox: claiming failed: {exc}"
                log.error("claiming from the outbox failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            if not items:
                if self._draining:
                    return
                with contextlib.suppress(TimeoutError):  # not wait_for: see checkpoint.py
                    async with asyncio.timeout(_IDLE_POLL):
                        await self.outbox.arrived.wait()
                continue
            if len(items) < self.batch_size and self.linger and not self._draining:
                await asyncio.sleep(self.linger)
                with contextlib.suppress(Exception):  # the next loop claims it anyway
                    items = [*items, *await self._claim(self.batch_size - len(items))]
            await self.deliver(items)

    async def _claim(self, limit: int) -> list[OutboxItem]:
        """Up to ``limit`` records, claimed a slice at a time."""
        items: list[OutboxItem] = []
        while len(items) < limit:
            if items:
                await asyncio.sleep(0)
            part = await self.outbox.claim(min(SLICE, limit - len(items)))
            items += part
            if len(part) < SLICE:
                break
        return items

    async def deliver(self, items: Sequence[OutboxItem]) -> None:
        """Write one claimed batch to every sink, retrying transient failures, then ack."""
        # record_id -> (stored JSON, its object) for every record still to deliver. A row
        # read from the database is decoded once, here, and checked whole, so a sink never
        # sees a truncated or foreign row; one handed over from memory comes with its object.
        batch: dict[str, tuple[str, Mapping[str, Any]]] = {}
        dead: list[tuple[OutboxItem, str, str]] = []
        for n, item in enumerate(items, 1):
            if n % SLICE == 0:
                await asyncio.sleep(0)
            body, obj = item.body, item.obj
            if obj is None:
                obj, problem = decode_object(body)
                if problem:
                    dead.append((item, "outbox", f"undecodable outbox row: {problem}"))
                    continue
            batch[item.record_id] = (body if isinstance(body, str) else body.decode(), obj)
        refused: dict[str, tuple[str, str]] = {}  # record_id -> (sink, reason)
        decoded: dict[str, Record] = {}
        pending = list(self.sinks)
        attempt = 0
        while pending:
            for sink in list(pending):
                if not batch:
                    pending.clear()
                    break
                try:
                    await _write(sink, batch, decoded)
                except PermanentSinkError as exc:
                    for record_id in exc.record_ids:
                        if batch.pop(record_id, None) is not None:
                            refused[record_id] = (sink.name, exc.reason)
                    pending.remove(sink)
                except Exception as exc:  # any other failure is transient by contract
                    self.failures += 1
                    self.last_error = f"{sink.name}: {exc}"
                    log.warning("sink %s failed (attempt %d): %s", sink.name, attempt + 1, exc)
                else:
                    pending.remove(sink)
            if pending:
                delay = backoff_delay(
                    attempt, cap=self.max_backoff, rng=self._rng, base=self.base_backoff
                )
                self.delays = [*self.delays[-31:], delay]
                attempt += 1
                await asyncio.sleep(delay)
        acked: list[int] = []
        for item in items:
            if item.record_id in refused:
                dead.append((item, *refused[item.record_id]))
            elif item.record_id in batch:
                acked.append(item.seq)
        if dead:
            self.dead_lettered += len(dead)
            for item, sink_name, reason in dead:
                log.error("dead-lettered record %s (%s): %s", item.record_id, sink_name, reason)
            await self._until_done("moving dead letters", lambda: self.outbox.dead_letter(dead))
        for start in range(0, len(acked), SLICE):
            if start:
                await asyncio.sleep(0)
            part = acked[start : start + SLICE]
            await self._until_done("acknowledging", functools.partial(self.outbox.ack, part))
        self.batches += 1
        self.forwarded += len(acked)
        self.last_delivery = time.monotonic()
        self.last_error = None

    async def _until_done(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Retry an outbox write with backoff until it succeeds (or the worker is stopped).

        The records are in every sink already; only the outbox's own disk failed (full, or
        read-only), and giving up would stop all forwarding. Both writes are idempotent."""
        attempt = 0
        while True:
            try:
                await step()
                return
            except Exception as exc:  # any failure of the local outbox: log, count, retry
                self.outbox_failures += 1
                self.last_error = f"outbox: {what} failed: {exc}"
                delay = backoff_delay(
                    attempt, cap=self.max_backoff, rng=self._rng, base=self.base_backoff
                )
                log.error(
                    "%s delivered records in the outbox failed (attempt %d, next in %.2fs): %s",
                    what, attempt + 1, delay, exc,
                )  # fmt: skip
                self.delays = [*self.delays[-31:], delay]
                attempt += 1
                await asyncio.sleep(delay)


async def _write(
    sink: Sink,
    batch: dict[str, tuple[str, Mapping[str, Any]]],
    decoded: dict[str, Record],
) -> None:
    """Hand the batch to a sink in the cheapest form it takes."""
    if isinstance(sink, StoredSink):
        await sink.write_stored(
            [body for body, _ in batch.values()], [o for _, o in batch.values()]
        )
    elif isinstance(sink, ObjectSink):
        await sink.write_objects([obj for _, obj in batch.values()])
    elif isinstance(sink, JsonSink):
        # The stored JSON goes through as it is, never re-encoded.
        await sink.write_json(list(batch), [body for body, _ in batch.values()])
    else:
        for record_id, (body, _) in batch.items():
            if record_id not in decoded:
                decoded[record_id] = decode_record(body)
        await sink.write_batch([decoded[r] for r in batch])


class ForwarderCollector(Collector):
    """Prometheus metrics read from the live outbox and forwarder at scrape time."""

    def __init__(self, forwarder: Forwarder) -> None:
        self._forwarder = forwarder

    def collect(self) -> Iterator[Metric]:
        f = self._forwarder
        yield GaugeMetricFamily(
            "consent_outbox_depth", "Undelivered records in the outbox.", value=f.outbox.depth
        )
        yield GaugeMetricFamily(
            "consent_outbox_oldest_age_seconds",
            "Age of the oldest undelivered record (0 when empty).",
            value=f.outbox.oldest_age() or 0.0,
        )
        yield CounterMetricFamily(
            "consent_outbox_commits", "Group commits of the outbox.", value=f.outbox.commits
        )
        yield CounterMetricFamily(
            "consent_outbox_syncs", "fsyncs of the outbox WAL (power durability).",
            value=f.outbox.syncs,
        )  # fmt: skip
        yield CounterMetricFamily(
            "consent_outbox_sync_seconds",
            "Time group commits waited for their fsync; divided by syncs, the disk's latency.",
            value=f.outbox.sync_seconds,
        )
        yield CounterMetricFamily(
            "consent_forwarder_batches", "Batches delivered to every sink.", value=f.batches
        )
        yield CounterMetricFamily(
            "consent_forwarder_records", "Records delivered to every sink.", value=f.forwarded
        )
        yield CounterMetricFamily(
            "consent_forwarder_failures", "Transient sink failures.", value=f.failures
        )
        yield CounterMetricFamily(
            "consent_forwarder_outbox_failures",
            "Failed acknowledgements or dead-letter moves in the outbox (retried).",
            value=f.outbox_failures,
        )
        yield GaugeMetricFamily(
            "consent_outbox_wal_bytes",
            "Bytes of the outbox WAL in use after the last write (the file is reused under "
            "load and truncated once the outbox is idle).",
            value=f.outbox.checkpointer.wal_bytes,
        )
        yield GaugeMetricFamily(
            "consent_outbox_file_bytes", "Size of the outbox file.", value=f.outbox.file_bytes()
        )
        yield CounterMetricFamily(
            "consent_outbox_checkpoints",
            "Outbox checkpoints that truncated the WAL.",
            value=f.outbox.checkpointer.rounds,
        )
        yield CounterMetricFamily(
            "consent_outbox_checkpoint_hold_seconds",
            "Time appends were held for the last step of WAL checkpoints.",
            value=f.outbox.checkpointer.hold_seconds,
        )
        yield CounterMetricFamily(
            "consent_forwarder_dead_letters", "Records moved to dead letters.",
            value=f.dead_lettered,
        )  # fmt: skip
