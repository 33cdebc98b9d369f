"""A PostgreSQL store cut off logs one line per event, not a traceback per reconnect.

The threat is to operators: while the server was unreachable, asyncpg's pool logged a whole
traceback ("Failed to restore the pool connection floor") every few milliseconds per
connection, which buried the log lines that matter. The warning must stay (an outage is
news), as one line naming the error; an unexpected exception keeps its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from gateway.sinks.pg_common import OneLineOutages
from gateway.sinks.postgres import PostgresStore
from tests.pg import TcpProxy, eventually, make_record, pg_dsn  # noqa: F401


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        info = sys.exc_info()
    return logging.LogRecord(
        "asyncpg.pool", logging.WARNING, __file__, 1, "Failed to restore the %s; retrying",
        ("pool connection floor",), info,
    )  # fmt: skip


def test_a_refused_connection_is_one_line_naming_the_error() -> None:
    record = _record(ConnectionRefusedError(111, "Connection refused"))
    assert OneLineOutages().filter(record)
    assert record.exc_info is None
    assert record.getMessage() == (
        "Failed to restore the pool connection floor; retrying: "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
    assert "Traceback" not in logging.Formatter().format(record)


def test_any_other_exception_keeps_its_traceback() -> None:
    record = _record(ValueError("a bug"))
    assert OneLineOutages().filter(record)
    assert record.exc_info is not None
    assert "Traceback" in logging.Formatter().format(record)


@pytest.mark.postgres
async def test_a_store_cut_off_logs_no_traceback(
    pg_dsn: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = TcpProxy(5432)
    await proxy.start()
    store = PostgresStore(pg_dsn.replace(":5432/", f":{proxy.port}/"), pool_size=2)
    await store.open()
    try:
        await store.write_batch([make_record("before")])
        with caplog.at_level(logging.WARNING):
            await proxy.stop()  # cuts the pooled connections and refuses new ones
            for _ in range(3):
                with pytest.raises(Exception):  # noqa: B017, PT011 -- whatever the driver raises
                    await store.write_batch([make_record("during")])
            # The pool tries to restore its floor of connections, and is refused each time.
            await eventually(
                lambda: any(r.name == "asyncpg.pool" for r in caplog.records), within=10
            )
        pool_records = [r for r in caplog.records if r.name == "asyncpg.pool"]
        assert all(r.exc_info is None for r in pool_records)
        assert any("Connection" in r.getMessage() for r in pool_records)
        await proxy.start()
        for _ in range(200):  # back, without a restart
            if await _writes(store):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the store did not come back")
    finally:
        await store.close()
        await proxy.stop()


async def _writes(store: PostgresStore) -> bool:
    try:
        await store.write_batch([make_record("after")])
    except Exception:  # still reconnecting
        return False
    return True
