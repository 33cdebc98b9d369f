"""Many consent records written by PostgreSQL itself, for the audit's size tests and bench.

Inserted with one INSERT … SELECT per batch over generate_series, so the store's triggers
chain and count them as they would the forwarder's batches, without a Python object each.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from gateway.sinks.postgres import migrate
from gateway.sinks.postgres_partitions import ENSURE_RANGE

START = datetime(2026, 1, 1, tzinfo=UTC)

_FILL = """
    INSERT INTO consent_records (
        record_id, recorded_at, site, subject_id, banner_version, consent_revision, action,
        choices, channel, language, rule_id, region_country, region_subdivision, region_source,
        gpc, ip_truncated, user_agent, origin, page_url, node_id, idempotency_key, withdraws,
        signals)
    SELECT gen_random_uuid(), $5::timestamptz + i * $6::float8 * interval '1 second',
        $3, 'subject-' || (i % 100000), CASE WHEN i % 7 < 3 THEN 'v1' ELSE 'v2' END, 'r1',
        (ARRAY['accept_all', 'reject_all', 'custom', 'withdraw', 'gpc'])[1 + (i * 7919) % 5],
        jsonb_build_object('necessary', true, 'analytics', i % 3 = 0, 'marketing', i % 5 = 0),
        'web', (ARRAY['en', 'de', 'fr'])[1 + i % 3], 'eu-gdpr',
        (ARRAY['DE', 'FR', 'US'])[1 + (i / 7) % 3], NULL, 'header', i % 11 = 0,
        '203.0.113.0/24', 'Mozilla/5.0 (X11; Linux x86_64) bench', 'https://shop.example',
        'https://shop.example/page', $4, NULL, NULL, '{}'::jsonb
    FROM generate_series($1::bigint, $2::bigint) AS i
"""


async def fill(
    dsn: str,
    count: int,
    *,
    site: str = "demo",
    node: str = "bench-node",
    batch: int = 50_000,
    start: datetime = START,
    step: float = 1.0,
) -> None:
    """``count`` records of ``site`` in batches of ``batch`` (each one forwarder-like commit),
    the i-th recorded ``step`` * i seconds after ``start``."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await conn.execute(ENSURE_RANGE, start, start + timedelta(seconds=count * step))
        for first in range(0, count, batch):
            last = min(count, first + batch) - 1
            await conn.execute(_FILL, first, last, site, node, start, step)
    finally:
        await conn.close()
