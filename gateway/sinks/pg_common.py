"""What every PostgreSQL-backed store shares: versioned migrations under an advisory lock,
a pool opened (and the schema migrated) on first use, connections and transactions from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg

log = logging.getLogger("gateway.sinks.postgres")

# What an unreachable or failing server raises: retried later, never fatal at start-up.
UNREACHABLE = (TimeoutError, OSError, asyncpg.PostgresError)
# What a lost or refused connection raises (not a statement's error).
_OUTAGE = (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError)


class OneLineOutages(logging.Filter):
    """asyncpg's pool logs a whole traceback each time it fails to reconnect a connection,
    and while the server is unreachable it retries every few milliseconds per connection:
    a store cut off for a minute buried the log in tracebacks that all say "connection
    refused" (the forwarder already logs each failed batch, on one line). The warning is
    kept, as one line that names the error; any other exception keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _OUTAGE):
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_outages() -> None:
    """Attach ``OneLineOutages`` to asyncpg's pool logger (idempotent)."""
    logger = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, OneLineOutages) for f in logger.filters):
        logger.addFilter(OneLineOutages())


async def first_keyed(
    conn: asyncpg.Connection,
    table: str,
    columns: str,
    site: str,
    subject_id: str,
    key: str,
    since: datetime,
) -> asyncpg.Record | None:
    """``columns`` of the subject's first row in ``table`` (names from the stores' code, never
    a caller's) made with idempotency key ``key`` at ``since`` or later: the subject index
    narrows it to the subject's rows of the period."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {columns} FROM {table} WHERE site = $1 AND subject_id = $2 "
        "AND recorded_at >= $3 AND idempotency_key = $4 ORDER BY recorded_at, record_id LIMIT 1",
        site, subject_id, since, key,
    )  # fmt: skip
    return row


def rfc3339(value: datetime) -> str:
    """A stored time as the fixed-width RFC 3339 UTC text every store answers with."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# A migration step: SQL, or a function of the connection for what SQL alone cannot do (e.g.
# linking existing rows into the audit chain with digests computed in Python).
Step = str | Callable[[asyncpg.Connection], Awaitable[None]]


async def migrate(
    conn: asyncpg.Connection, *, lock: int, table: str, migrations: Sequence[Step], what: str
) -> int:
    """Apply the migrations past the version recorded in ``table``, in one transaction and
    under the advisory ``lock``: safe when several nodes start at once. The version reached."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {table}")
        for version in range(current + 1, len(migrations) + 1):
            step = migrations[version - 1]
            if isinstance(step, str):
                await conn.execute(step)
            else:
                await step(conn)
            await conn.execute(f"INSERT INTO {table} (version) VALUES ($1)", version)
            log.info("%s schema migrated to version %d", what, version)
        return len(migrations)


Migrate = Callable[[asyncpg.Connection], Awaitable[object]]


def migrator(
    *, lock: int, table: str, migrations: Sequence[Step], what: str
) -> Callable[[asyncpg.Connection], Awaitable[int]]:
    """``migrate`` bound to one set of tables: its lock, version table and steps."""

    async def run(conn: asyncpg.Connection) -> int:
        return await migrate(conn, lock=lock, table=table, migrations=migrations, what=what)

    run.__doc__ = f"Bring the {what} tables to the latest version; safe when nodes start at once."
    return run


class PgPooled:
    """A pool of its own, opened on first use after ``migrations`` ran on one connection.

    ``what`` names the store in logs; ``command_timeout`` bounds every statement.
    """

    what = "PostgreSQL store"
    command_timeout = 60.0

    def __init__(self, dsn: str, *, pool_size: int = 2, connect_timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    def migrations(self) -> Sequence[Migrate]:
        """The schema steps to run (in order) before the pool opens."""
        return ()

    async def open(self) -> None:
        """Connect and migrate; an unreachable server is retried on first use, not fatal."""
        try:
            await self._ensure()
        except UNREACHABLE as exc:
            log.warning("%s unreachable at start-up (%s); will retry", self.what, exc)

    async def _ensure(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                quiet_outages()
                conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
                try:
                    for step in self.migrations():
                        await step(conn)
                finally:
                    await conn.close()
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=self.connect_timeout,
                    command_timeout=self.command_timeout,
                )
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection (the pool opened, and the schema migrated, first)."""
        pool = await self._ensure()
        async with pool.acquire() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside one transaction."""
        async with self._conn() as conn, conn.transaction():
            yield conn
