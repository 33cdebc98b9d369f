"""PostgreSQL schema of the audit trail: the hash chain and the report rollups.

Both follow every insert into ``consent_records`` from statement triggers over the newly
stored rows, so they are written in the forwarder's ``write_batch`` transaction, whichever
statement stores the rows (COPY, or INSERT … ON CONFLICT DO NOTHING after a lost ack), and a
record is chained and counted exactly once.

The chain (gateway/audit/chain.py holds the same arithmetic in Python for verification):
each node has one chain; a link is ``sha256(prev || kind || 0x00 || digest)``, where
``digest`` is the sha256 of the record's canonical content (``audit_consent_digest``) and
``prev`` the previous link of the same node (32 zero bytes first). The node's head row is
locked (FOR UPDATE) while a batch is linked: that lock is the single owner of the node's
order, so two processes delivering for one node cannot fork its chain, and a restart goes on
from the last durable link. ``kind`` makes room for records of other kinds (preference
changes, rights-request transitions): each kind adds its digest function and trigger.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.sinks.rights import ERASED_FIELDS, PREFERENCE_ERASED_FIELDS

# jsonb's text form is canonical (sorted keys, fixed spacing); timestamps go in as integer
# microseconds since the epoch, so neither the session's TimeZone nor DateStyle matters.
CONSENT_DIGEST = """
    sha256(convert_to(jsonb_build_array(
        {r}.record_id::text, (extract(epoch FROM {r}.recorded_at) * 1000000)::bigint,
        {r}.site, {r}.subject_id, {r}.banner_version, {r}.consent_revision, {r}.action,
        {r}.choices, {r}.channel, {r}.language, {r}.rule_id, {r}.region_country,
        {r}.region_subdivision, {r}.region_source, {r}.gpc, {r}.ip_truncated, {r}.user_agent,
        {r}.origin, {r}.page_url, {r}.node_id, {r}.idempotency_key, {r}.withdraws::text,
        {r}.signals)::text, 'UTF8'))
"""

# The report dimensions of a record; region is "CC" or "CC-SUB", "" when unknown.
_REGION = "coalesce(i.region_country || coalesce('-' || i.region_subdivision, ''), '')"
_DAY = "(i.recorded_at AT TIME ZONE 'UTC')::date"

# The trigger that links every newly stored row of a record table into its node's chain, one
# per kind (a generated function, so the kinds cannot drift apart).
_CHAIN_FOLLOW = """
    CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        r record;
        cur text := NULL;
        s bigint;
        h bytea;
        nodes text[] := '{{}}'; seqs bigint[] := '{{}}'; refs text[] := '{{}}';
        sites text[] := '{{}}'; ats timestamptz[] := '{{}}';
        prevs bytea[] := '{{}}'; hashes bytea[] := '{{}}';
    BEGIN
        FOR r IN
            SELECT i.node_id, i.record_id::text AS ref, i.site, i.recorded_at,
                   {digest}(i) AS d
            FROM inserted i ORDER BY i.node_id, i.recorded_at, i.record_id
        LOOP
            IF cur IS DISTINCT FROM r.node_id THEN
                IF cur IS NOT NULL THEN
                    UPDATE audit_heads SET seq = s, hash = h WHERE node_id = cur;
                END IF;
                cur := r.node_id;
                INSERT INTO audit_heads VALUES (cur, 0, decode(repeat('00', 32), 'hex'))
                    ON CONFLICT (node_id) DO NOTHING;
                SELECT a.seq, a.hash INTO s, h FROM audit_heads a
                    WHERE a.node_id = cur FOR UPDATE;
            END IF;
            s := s + 1;
            nodes := nodes || cur; seqs := seqs || s; refs := refs || r.ref;
            sites := sites || r.site; ats := ats || r.recorded_at; prevs := prevs || h;
            h := sha256(h || convert_to('{kind}', 'UTF8') || decode('00', 'hex') || r.d);
            hashes := hashes || h;
        END LOOP;
        IF cur IS NOT NULL THEN
            UPDATE audit_heads SET seq = s, hash = h WHERE node_id = cur;
            INSERT INTO audit_chain (node_id, seq, kind, ref, site, recorded_at, prev_hash, hash)
            SELECT n, q, '{kind}', f, t, a, p, x
            FROM unnest(nodes, seqs, refs, sites, ats, prevs, hashes) AS u(n, q, f, t, a, p, x);
        END IF;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER {function} AFTER INSERT ON {table}
        REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION {function}();
"""


def _chain_follow(function: str, kind: str, digest: str, table: str) -> str:
    return _CHAIN_FOLLOW.format(function=function, kind=kind, digest=digest, table=table)


MIGRATION = f"""
    CREATE TABLE audit_chain (
        node_id text COLLATE "C" NOT NULL,
        seq bigint NOT NULL,
        kind text COLLATE "C" NOT NULL,
        ref text COLLATE "C" NOT NULL,
        site text COLLATE "C" NOT NULL,
        recorded_at timestamptz NOT NULL,
        prev_hash bytea NOT NULL,
        hash bytea NOT NULL,
        PRIMARY KEY (node_id, seq)
    );
    CREATE UNIQUE INDEX audit_chain_ref ON audit_chain (kind, ref);
    CREATE TABLE audit_heads (
        node_id text COLLATE "C" PRIMARY KEY,
        seq bigint NOT NULL,
        hash bytea NOT NULL
    );
    CREATE TABLE audit_checkpoints (
        checkpoint_id bigserial PRIMARY KEY,
        taken_at timestamptz NOT NULL DEFAULT now(),
        heads jsonb NOT NULL,
        signature text NOT NULL
    );
    CREATE FUNCTION audit_consent_digest(r consent_records) RETURNS bytea
        LANGUAGE sql IMMUTABLE AS $$ SELECT {CONSENT_DIGEST.format(r="r")} $$;
    {_chain_follow("audit_chain_follow", "consent", "audit_consent_digest", "consent_records")}
    CREATE TABLE consent_rollup (
        site text COLLATE "C" NOT NULL,
        day date NOT NULL,
        region text COLLATE "C" NOT NULL,
        rule_id text COLLATE "C" NOT NULL,
        banner_version text COLLATE "C" NOT NULL,
        language text COLLATE "C" NOT NULL,
        channel text COLLATE "C" NOT NULL,
        action text COLLATE "C" NOT NULL,
        gpc boolean NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (site, day, region, rule_id, banner_version, language, channel, action, gpc)
    );
    CREATE TABLE consent_purpose_rollup (
        site text COLLATE "C" NOT NULL,
        day date NOT NULL,
        region text COLLATE "C" NOT NULL,
        rule_id text COLLATE "C" NOT NULL,
        banner_version text COLLATE "C" NOT NULL,
        language text COLLATE "C" NOT NULL,
        channel text COLLATE "C" NOT NULL,
        action text COLLATE "C" NOT NULL,
        purpose text COLLATE "C" NOT NULL,
        granted bigint NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (site, day, region, rule_id, banner_version, language, channel, action,
                     purpose)
    );
    -- Rows are inserted in key order, so concurrent batches lock counters in one order and
    -- cannot deadlock.
    CREATE FUNCTION consent_rollup_follow() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO consent_rollup AS c
        SELECT i.site, {_DAY}, {_REGION}, i.rule_id, i.banner_version, i.language,
               i.channel, i.action, i.gpc, count(*)
        FROM inserted i GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
        ON CONFLICT (site, day, region, rule_id, banner_version, language, channel, action, gpc)
        DO UPDATE SET n = c.n + excluded.n;
        INSERT INTO consent_purpose_rollup AS c
        SELECT i.site, {_DAY}, {_REGION}, i.rule_id, i.banner_version, i.language,
               i.channel, i.action, p.key, count(*) FILTER (WHERE p.value = 'true'), count(*)
        FROM inserted i, jsonb_each(i.choices) AS p
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
        ON CONFLICT (site, day, region, rule_id, banner_version, language, channel, action,
                     purpose)
        DO UPDATE SET granted = c.granted + excluded.granted, n = c.n + excluded.n;
        RETURN NULL;
    END
    $$;
    CREATE TABLE banner_impressions (
        site text COLLATE "C" NOT NULL,
        day date NOT NULL,
        banner_version text COLLATE "C" NOT NULL,
        rule_id text COLLATE "C" NOT NULL,
        region text COLLATE "C" NOT NULL,
        language text COLLATE "C" NOT NULL,
        channel text COLLATE "C" NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (site, day, banner_version, rule_id, region, language, channel)
    );
    CREATE TRIGGER consent_rollup_follow AFTER INSERT ON consent_records
        REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION consent_rollup_follow();
"""

# Erasure (a rights deletion blanks ERASED_FIELDS of a subject's records) must leave the
# history verifiable. An UPDATE of consent_records that changes nothing but blanking those
# fields is an erasure, whoever runs it: the record's digest before it is kept in
# ``audit_erasures`` (verification takes the record's link from it), and an ``erasure`` link,
# sha256(digest before || digest after), joins the record's node chain. A later change of the
# erased row breaks that link; a change of the kept digest breaks the record's own link; any
# other UPDATE is no erasure and breaks the record's link as a tamper does.
_ERASURE_FOLLOW = """
    CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        r record;
        cur text := NULL;
        s bigint;
        h bytea;
        prev bytea;
    BEGIN
        FOR r IN
            SELECT n.node_id, n.record_id::text AS ref, n.site,
                   {digest}(o) AS before, {digest}(n) AS after
            FROM old_rows o JOIN new_rows n ON n.record_id = o.record_id
            WHERE to_jsonb(n) - ARRAY[{personal}] = to_jsonb(o) - ARRAY[{personal}]
              AND {blank} AND ({held})
              AND NOT EXISTS (SELECT 1 FROM audit_erasures e WHERE e.ref = n.record_id::text)
            ORDER BY n.node_id, n.record_id
        LOOP
            IF cur IS DISTINCT FROM r.node_id THEN
                IF cur IS NOT NULL THEN
                    UPDATE audit_heads SET seq = s, hash = h WHERE node_id = cur;
                END IF;
                cur := r.node_id;
                INSERT INTO audit_heads VALUES (cur, 0, decode(repeat('00', 32), 'hex'))
                    ON CONFLICT (node_id) DO NOTHING;
                SELECT a.seq, a.hash INTO s, h FROM audit_heads a
                    WHERE a.node_id = cur FOR UPDATE;
            END IF;
            INSERT INTO audit_erasures VALUES (r.ref, r.before);
            s := s + 1;
            prev := h;
            h := sha256(prev || convert_to('erasure', 'UTF8') || decode('00', 'hex')
                        || sha256(r.before || r.after));
            INSERT INTO audit_chain (node_id, seq, kind, ref, site, recorded_at, prev_hash, hash)
            VALUES (cur, s, 'erasure', r.ref, r.site, now(), prev, h);
        END LOOP;
        IF cur IS NOT NULL THEN
            UPDATE audit_heads SET seq = s, hash = h WHERE node_id = cur;
        END IF;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER {function} AFTER UPDATE ON {table}
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {function}();
"""


def _erasure_follow(function: str, table: str, digest: str, fields: Mapping[str, Any]) -> str:
    """The trigger that turns a blanking UPDATE of ``fields`` in ``table`` into an erasure
    link (one per record kind, generated so the kinds cannot drift apart)."""
    items = sorted(fields.items())
    return _ERASURE_FOLLOW.format(
        function=function,
        table=table,
        digest=digest,
        personal=", ".join(f"'{name}'" for name, _ in items),
        blank=" AND ".join(
            f"n.{name} IS NULL" if value is None else f"n.{name} = '{value}'"
            for name, value in items
        ),
        held=" OR ".join(
            f"o.{name} IS NOT NULL" if value is None else f"o.{name} <> '{value}'"
            for name, value in items
        ),
    )


ERASURE_MIGRATION = f"""
    CREATE TABLE audit_erasures (
        ref text COLLATE "C" PRIMARY KEY,
        digest bytea NOT NULL
    );
    {
    _erasure_follow(
        "audit_erasure_follow", "consent_records", "audit_consent_digest", ERASED_FIELDS
    )
}
"""


# Preference records: their own table beside consent_records, chained as kind "preference";
# identity links keep their history beside them (the directory holds the links themselves).
PREFERENCE_DIGEST = """
    sha256(convert_to(jsonb_build_array(
        {r}.record_id::text, (extract(epoch FROM {r}.recorded_at) * 1000000)::bigint,
        {r}.site, {r}.subject_id, {r}.product_line, {r}.preferences, {r}.channel,
        {r}.evidence, {r}.actor, {r}.language, {r}.ip_truncated, {r}.user_agent, {r}.origin,
        {r}.node_id, {r}.idempotency_key, {r}.extra)::text, 'UTF8'))
"""

PREFERENCE_MIGRATION = f"""
    CREATE TABLE preference_records (
        record_id uuid PRIMARY KEY,
        recorded_at timestamptz NOT NULL,
        site text COLLATE "C" NOT NULL,
        subject_id text COLLATE "C" NOT NULL,
        product_line text COLLATE "C" NOT NULL,
        preferences jsonb NOT NULL,
        channel text NOT NULL,
        evidence jsonb,
        actor text NOT NULL,
        language text NOT NULL,
        ip_truncated text,
        user_agent text NOT NULL,
        origin text NOT NULL,
        node_id text NOT NULL,
        idempotency_key text,
        extra jsonb NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX preference_records_subject
        ON preference_records (site, subject_id, recorded_at DESC, record_id DESC);
    CREATE TABLE identity_link_records (
        record_id uuid PRIMARY KEY,
        recorded_at timestamptz NOT NULL,
        site text COLLATE "C" NOT NULL,
        subject_id text COLLATE "C" NOT NULL,
        identity_type text NOT NULL,
        identity_hash text COLLATE "C" NOT NULL,
        source text NOT NULL,
        node_id text NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX identity_link_records_subject
        ON identity_link_records (site, subject_id, recorded_at);
    CREATE FUNCTION audit_preference_digest(r preference_records) RETURNS bytea
        LANGUAGE sql IMMUTABLE AS $$ SELECT {PREFERENCE_DIGEST.format(r="r")} $$;
    {
    _chain_follow(
        "audit_preference_follow", "preference", "audit_preference_digest", "preference_records"
    )
}
    {
    _erasure_follow(
        "audit_preference_erasure_follow",
        "preference_records",
        "audit_preference_digest",
        PREFERENCE_ERASED_FIELDS,
    )
}
"""
