"""The outbox's values: an append waiting for its group, its answer, a claimed record.

Plain and slotted: one of each is built per request.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from gateway.core.errors import BadRequest
from gateway.core.record_codec import Record, decode_record
from gateway.recording.outbox import idempotency


class Appended(NamedTuple):
    """The answer to an append: the stored record's identity and receipt (a tuple: one is
    built per request)."""

    record_id: str
    recorded_at: str
    receipt: str
    duplicate: bool  # True when an earlier record with the same idempotency key answered
    # A retry answered from a key the outbox kept: the hash of its record's content, whose
    # receipt the caller signs again (``receipt`` is empty then; keyed_appends.py).
    content_hash: str = ""


class OutboxItem(NamedTuple):
    """A claimed, undelivered record; ``body`` is its JSON as appended.

    ``obj`` is the record as a JSON object when the claim came from memory (appended by this
    process, so never corrupt): the forwarder then has nothing to decode. Read-only.
    """

    seq: int
    record_id: str
    body: str | bytes
    obj: Mapping[str, Any] | None = None

    def record(self) -> Record:
        return decode_record(self.body)


class Append:
    """One waiting append (a plain slotted class: it is built once per request)."""

    __slots__ = ("body", "future", "receipt", "record", "record_id", "recorded_at", "scope")

    def __init__(
        self,
        record: Record,
        receipt: str,
        body: bytes,
        future: asyncio.Future[Appended],
        scope: idempotency.Scope | None = None,
    ) -> None:
        self.record = record
        self.record_id = record.record_id
        self.recorded_at = record.recorded_at
        self.scope = scope if scope is not None else idempotency.scope(record, body)
        self.receipt = receipt
        self.body = body
        self.future = future


Settled = list[tuple["asyncio.Future[Any]", Any, BaseException | None]]


def keys_of(
    conn: sqlite3.Connection, appends: list[Append], now_ns: int
) -> tuple[list[idempotency.Verdict], list[Append]]:
    """What ``idempotency.resolve`` says of each append of a group, and the appends to store,
    whose keys it remembers (inside the group's write transaction)."""
    verdicts = idempotency.resolve(conn, [a.scope for a in appends], now_ns)
    fresh = [a for a, v in zip(appends, verdicts, strict=True) if v is None]
    idempotency.remember(
        conn,
        [(a.scope, a.record_id, a.recorded_at) for a in fresh if a.scope is not None],
        now_ns,
    )
    return verdicts, fresh


def answers(appends: list[Append], verdicts: list[idempotency.Verdict]) -> Settled:
    """Each append's answer once its group committed, by what idempotency.resolve said."""
    answers: list[Appended | BadRequest] = []
    for a, verdict in zip(appends, verdicts, strict=True):
        answer: Appended | BadRequest
        if verdict is None:
            answer = Appended(a.record_id, a.recorded_at, a.receipt, False)
        elif isinstance(verdict, int):
            # A retry inside the same group: answered exactly like its first occurrence.
            earlier = answers[verdict]
            answer = earlier._replace(duplicate=True) if isinstance(earlier, Appended) else earlier
        elif isinstance(verdict, idempotency.Earlier):
            answer = Appended(verdict.record_id, verdict.recorded_at, verdict.receipt, True,
                              verdict.content_hash)  # fmt: skip
        else:
            answer = verdict  # the key was used for another choice: 409, nothing stored
        answers.append(answer)
    return [
        (a.future, None, answer) if isinstance(answer, BadRequest) else (a.future, answer, None)
        for a, answer in zip(appends, answers, strict=True)
    ]


def ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Runs of consecutive sequence numbers, so a batch is deleted in one or two statements."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def settle_one(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
