"""``consent_records`` partitioned by month (schema version 5 of the PostgreSQL store).

Each calendar month (UTC) of ``recorded_at`` is a partition ``consent_records_pYYYYMM``;
months older than the last retention (``consent-gateway store retention``) live in one
partition ``consent_records_retained`` that holds only what retention kept. There is no
default partition: nothing lands in a catch-all that grows unseen. Partitions are made

- ahead: the current month and the next ``AHEAD`` ones, when a store opens and whenever a
  batch brings a month the node has not seen;
- on demand: before a batch is written, for every month in it that has no partition yet
  (an outbox replayed after a long outage, records of a month past the ones made ahead).

Keys: the primary key is ``(site, subject_id, recorded_at, record_id)``: it contains the
partition key (as PostgreSQL requires of a unique key on a partitioned table), it leads
with (site, subject) (the distribution key of a sharded store such as Citus), it answers a
subject's history and latest state, and it makes a redelivered record a no-op (a record id
always comes with the same site, subject and time). ``(site, recorded_at, record_id)``
answers exports and reads by time, and the audit chain's joins (its links carry site and
time). The migration rewrites the table in one transaction, under the store's lock.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg

from gateway.sinks import postgres_audit

AHEAD = 2  # months made ahead of the current one
_PARTITION_LOCK = 0x636F7070  # serialises partition creation across nodes

# Version 5. The version 4 table is renamed, its rows copied into the partitioned table (the
# same columns, collations and defaults)
# (every month of them gets its partition), then dropped; the triggers and the digest
# function (typed by the table's row) are made again on the new table. Rows are copied
# before the triggers exist: they are chained, counted and followed already.
MIGRATION = f"""
    ALTER TABLE consent_records RENAME TO consent_records_v4;
    ALTER TABLE consent_records_v4 RENAME CONSTRAINT consent_records_pkey
        TO consent_records_v4_pkey;
    ALTER INDEX consent_records_subject RENAME TO consent_records_v4_subject;
    CREATE TABLE consent_records (LIKE consent_records_v4 INCLUDING DEFAULTS,
        PRIMARY KEY (site, subject_id, recorded_at, record_id)
    ) PARTITION BY RANGE (recorded_at);
    CREATE INDEX consent_records_site_time ON consent_records (site, recorded_at, record_id);
    CREATE TABLE consent_retention (
        retention_id bigserial PRIMARY KEY,
        taken_at timestamptz NOT NULL DEFAULT now(),
        cutoff timestamptz NOT NULL,
        retained_before timestamptz NOT NULL,
        dropped text[] NOT NULL,
        kept bigint NOT NULL,
        bases jsonb NOT NULL,
        signature text NOT NULL
    );
    CREATE FUNCTION consent_records_partition(month date) RETURNS void
    LANGUAGE plpgsql AS $$
    DECLARE
        lo timestamptz := date_trunc('month', month::timestamp) AT TIME ZONE 'UTC';
        hi timestamptz := (date_trunc('month', month::timestamp) + interval '1 month')
            AT TIME ZONE 'UTC';
        part text := 'consent_records_p' || to_char(month, 'YYYYMM');
    BEGIN
        PERFORM pg_advisory_xact_lock({_PARTITION_LOCK});
        IF to_regclass(part) IS NOT NULL OR hi <= coalesce(
            (SELECT max(retained_before) FROM consent_retention), '-infinity') THEN
            RETURN;
        END IF;
        EXECUTE format('CREATE TABLE %I PARTITION OF consent_records FOR VALUES FROM (%L) TO (%L)',
                       part, lo, hi);
    END
    $$;
    DO $$
    DECLARE
        m date;
        last date;
    BEGIN
        SELECT date_trunc('month', coalesce(min(recorded_at), now()) AT TIME ZONE 'UTC')::date,
               date_trunc('month', greatest(coalesce(max(recorded_at), now()), now())
                   AT TIME ZONE 'UTC')::date
        INTO m, last FROM consent_records_v4;
        WHILE m <= last + interval '{AHEAD} months' LOOP
            PERFORM consent_records_partition(m);
            m := m + interval '1 month';
        END LOOP;
    END
    $$;
    INSERT INTO consent_records SELECT * FROM consent_records_v4;
    DROP FUNCTION audit_consent_digest(consent_records_v4);
    DROP TABLE consent_records_v4;
    CREATE FUNCTION audit_consent_digest(r consent_records) RETURNS bytea
        LANGUAGE sql IMMUTABLE AS $$ SELECT {postgres_audit.CONSENT_DIGEST.format(r="r")} $$;
    CREATE TRIGGER consent_latest_follow AFTER INSERT ON consent_records
        REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION consent_latest_follow();
    CREATE TRIGGER audit_chain_follow AFTER INSERT ON consent_records
        REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_follow();
    CREATE TRIGGER consent_rollup_follow AFTER INSERT ON consent_records
        REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION consent_rollup_follow();
    CREATE TRIGGER audit_erasure_follow AFTER UPDATE ON consent_records
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION audit_erasure_follow();
"""


# The partitions of every month from $1 to $2 (for writers that insert with SQL of their own).
ENSURE_RANGE = """
    SELECT consent_records_partition(m::date) FROM generate_series(
        date_trunc('month', $1::timestamptz AT TIME ZONE 'UTC'),
        $2::timestamptz AT TIME ZONE 'UTC', interval '1 month') AS m
"""


def month_of(recorded_at: object) -> str | None:
    """``YYYY-MM`` of an RFC 3339 UTC time, None if it has not that shape."""
    head = recorded_at[:7] if isinstance(recorded_at, str) else ""
    return head if len(head) == 7 and head[4] == "-" else None


def months_from(start: date, count: int) -> list[str]:
    out, y, m = [], start.year, start.month
    for _ in range(count):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


class Partitions:
    """The months this node knows have a partition (or are retained), made when missing."""

    def __init__(self) -> None:
        self.known: set[str] = set()

    def missing(self, months: set[str]) -> set[str]:
        return months - self.known

    async def ensure(self, conn: asyncpg.Connection, months: set[str]) -> None:
        """Make the partitions of ``months`` and of the months ahead of now (one statement)."""
        wanted = months | set(months_from(datetime.now(UTC).date(), AHEAD + 1))
        wanted -= self.known
        if not wanted:
            return
        await conn.execute(
            "SELECT consent_records_partition(to_date(m, 'YYYY-MM')) FROM unnest($1::text[]) m",
            sorted(wanted),
        )
        self.known |= wanted

    def forget(self) -> None:
        """After a write found no partition for a row (retention dropped one): ask again."""
        self.known.clear()
