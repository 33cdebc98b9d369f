"""The settings table: every GATEWAY_* setting's name, default and help, in one place.

It feeds the ``Settings`` defaults and validation (core/settings.py), ``serve --help`` and the
README's configuration table; a new setting is one row here and one field there.
"""

from __future__ import annotations

from gateway.core.setting_types import (
    Setting,
    _bool,
    _choice,
    _csv,
    _float,
    _fraction,
    _int,
    _key,
    _keys,
    _networks,
    _positive_int,
    _workers,
)

SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "Interface `serve` binds to."),
    Setting("port", "8000", "TCP port `serve` listens on.", _positive_int),
    Setting(
        "workers",
        "auto",
        "Serving processes of `serve` on one port, under a supervisor that restarts a crashed "
        "one; each has its own outbox in the data dir. `auto`: one per CPU this process may "
        "use (CPU affinity and cgroup quota); 1: a single process, no supervisor.",
        _workers,
    ),
    Setting(
        "banners_dir", "banners", "Folder of sites: `<site>/site.toml` plus template overrides."
    ),
    Setting(
        "locales_dir", "locales", "Folder of gettext catalogs: `<locale>/LC_MESSAGES/<site>.po`."
    ),
    Setting(
        "data_dir",
        "data",
        "Folder for the outbox, the embedded store, keys and the built geo database.",
    ),
    Setting(
        "geoip_db",
        "",
        "Path to a MaxMind-format `.mmdb` (City or Country). Empty: the database built by "
        "`consent-gateway geo build` in the data dir, if any.",
    ),
    Setting(
        "trusted_proxies",
        "",
        "IPs/CIDRs whose `X-Forwarded-For` (and the CDN headers of `GATEWAY_GEO_HEADERS`) are "
        "believed (comma separated). Empty: no proxy; the TCP peer is the client.",
        _networks,
    ),
    Setting(
        "geo_headers",
        "",
        "CDN header families read from trusted proxies: cloudflare (`CF-IPCountry`, "
        "`CF-Connecting-IP`), cloudfront (`CloudFront-Viewer-Country`, "
        "`CloudFront-Viewer-Address`), vercel, fastly, akamai (EdgeScape, `True-Client-IP`), "
        "custom. Empty: none.",
        _csv,
    ),
    Setting("geo_country_header", "", "Extra trusted header holding an ISO 3166-1 country code."),
    Setting("geo_region_header", "", "Extra trusted header holding the ISO 3166-2 subdivision."),
    Setting(
        "geo_cache_size", "65536", "Entries in the client-IP → region lookup cache.", _positive_int
    ),
    Setting(
        "store_url",
        "",
        "Central store. Empty: embedded SQLite in the data dir; `postgresql://…`: PostgreSQL.",
    ),
    Setting("store_pool_size", "4", "Connections in the PostgreSQL pool.", _positive_int),
    Setting("webhook_url", "", "Also POST each batch of records to this URL (CDP, CRM)."),
    Setting("webhook_secret", "", "HMAC-SHA256 key signing webhook batches.", secret=True),
    Setting(
        "webhook_format",
        "records",
        'Webhook body: `records` (`{"records": […]}`) or `cloudevents` (a CloudEvents 1.0 '
        "batch, one structured-mode event per record).",
        _choice("records", "cloudevents"),
    ),
    Setting(
        "webhook_data",
        "records",
        "What the webhook sends of each change: `records` (the records as stored: consents, "
        "preference changes, identity links) or `events` (`consent.recorded`, "
        "`preferences.updated`, `identity.linked`, each with the subject's linked identities as "
        "keyed hashes; schemas in docs/events/).",
        _choice("records", "events"),
    ),
    Setting(
        "nats_url",
        "",
        "Also publish every record to NATS JetStream at this URL (`nats://host:4222`). Empty: off.",
    ),
    Setting("nats_stream", "CONSENT_EVENTS", "JetStream stream (created when missing)."),
    Setting(
        "nats_subject_prefix",
        "consent_gateway",
        "Subjects are `<prefix>.<event>.<site>` (`consent.recorded`, `preferences.updated`, "
        "`identity.linked`); a created stream binds `<prefix>.>`.",
    ),
    Setting(
        "nats_duplicate_window",
        "600",
        "Seconds JetStream remembers message ids (record ids) to drop redeliveries; applies "
        "to a stream the gateway creates.",
        _float,
    ),
    Setting(
        "durability",
        "power",
        "`power`: fsync each group commit (survives power loss); `process`: survives a "
        "process crash only (faster).",
        _choice("power", "process"),
    ),
    Setting(
        "outbox_max_records",
        "1000000",
        "Undelivered records the outbox holds before answering 503.",
        _positive_int,
    ),
    Setting("forward_batch_size", "1000", "Records per forwarder batch.", _positive_int),
    Setting(
        "forward_linger",
        "0.05",
        "Seconds the forwarder waits to fill a partial batch (bigger batches, less CPU).",
        _float,
    ),
    Setting("forward_max_backoff", "60", "Cap of the forwarder's retry backoff, seconds.", _float),
    Setting("shutdown_drain", "10", "Seconds the forwarder may drain on shutdown.", _float),
    Setting(
        "outbox_checkpoint_mb",
        "16",
        "Outbox WAL in use (MiB) that triggers a checkpoint starting it over; appends are held "
        "for its last step (milliseconds). Keeps the WAL file about this size under any load.",
        _positive_int,
    ),
    Setting(
        "outbox_checkpoint_interval",
        "30",
        "Seconds between outbox checkpoints of a non-empty WAL below that size; the first that "
        "finds the outbox idle truncates the WAL file to 0 bytes and gives the file's free "
        "pages back after a backlog is delivered. 0: only at that size.",
        _float,
    ),
    Setting(
        "task_max_backoff",
        "30",
        "Cap, seconds, of the restart backoff of a failed background task (forwarder, "
        "checkpointer, key pruner, fsync helper, reload watcher).",
        _float,
    ),
    Setting(
        "ready_min_free_mb",
        "100",
        "`/readyz` answers 503 while the data dir's file system has less free space (MiB); "
        "0: never.",
        _float,
    ),
    Setting(
        "ready_max_forward_lag",
        "300",
        "`/readyz` answers 503 while the oldest undelivered record has waited longer "
        "(seconds): the forwarder is stalled or the store cannot keep up; 0: never.",
        _float,
    ),
    Setting(
        "receipt_key",
        "",
        "Secret signing receipts (and, unless `GATEWAY_SUBJECT_KEY` is set, deriving subject "
        "ids); the same on every node. Empty: with PostgreSQL, generated once into the central "
        "store (every node reads it there); with the embedded store, once into the data dir.",
        _key,
        secret=True,
    ),
    Setting(
        "receipt_keys_previous",
        "",
        "Earlier receipt keys (comma separated), still accepted when receipts are verified; "
        "new receipts are signed with `GATEWAY_RECEIPT_KEY` only.",
        _keys,
        secret=True,
    ),
    Setting(
        "subject_key",
        "",
        "Secret deriving subject ids from subject secrets; the same on every node. Empty: the "
        "receipt key. Set it to the old receipt key before rotating that one, so that subject "
        "ids stay.",
        _key,
        secret=True,
    ),
    Setting(
        "audit_key",
        "",
        "Secret signing the audit trail's checkpoints of chain heads (`consent-gateway audit "
        "checkpoint`, checked by `audit verify`); the same wherever those run.",
        secret=True,
    ),
    Setting(
        "identity_key",
        "",
        "Secret keying identity hashes and signing identity tokens; the same on every node. "
        "Empty: generated once into the central store (which then holds it too).",
        _key,
        secret=True,
    ),
    Setting(
        "admin_token",
        "",
        "Bearer token for /admin. Empty: admin endpoints are disabled.",
        secret=True,
    ),
    Setting("node_id", "", "This gateway node's id in records. Empty: the host name."),
    Setting("cache_max_age", "300", "Cache-Control max-age of banner responses, seconds.", _int),
    Setting("reload", "true", "Watch banners/ and locales/ and reload valid edits.", _bool),
    Setting(
        "public_url",
        "",
        "External base URL used in record_url. Empty: the request's Host if it is one of "
        "`GATEWAY_PUBLIC_HOSTS`, else a relative URL.",
    ),
    Setting("log_level", "info", "Log level.", _choice("debug", "info", "warning", "error")),
    Setting(
        "access_log",
        "errors",
        "Request log, one JSON line per request on stdout (time, method, path, query names, "
        "status, duration, bytes, site, region, request id; never the IP): `off`, `errors` "
        "(the default: status 400 and above; +0-1 per cent CPU per served request), `sampled` "
        "(errors, and `GATEWAY_ACCESS_LOG_SAMPLE` of the rest), `all` (about +15 per cent).",
        _choice("off", "errors", "sampled", "all"),
    ),
    Setting(
        "access_log_sample",
        "0.01",
        "Share (0-1) of the requests below 400 that `GATEWAY_ACCESS_LOG=sampled` logs.",
        _fraction,
    ),
    Setting(
        "state_check_interval",
        "3600",
        "Seconds a browser trusts the consent state in its cookie before the snippet asks the "
        "gateway (one conditional request, 304 when nothing changed) whether another channel "
        "changed it; a visit to the privacy center asks on the next page. 0: every page.",
        _int,
    ),
    # Abuse and resilience limits (issue 10).
    Setting(
        "public_hosts",
        "",
        "Host header values (`host` or `host:port`) the gateway may put in record_url when "
        "`GATEWAY_PUBLIC_URL` is empty. Empty: `GATEWAY_HOST:GATEWAY_PORT` (and "
        "`localhost:PORT` on a loopback bind).",
        _csv,
    ),
    Setting(
        "ops_token",
        "",
        "Bearer token for `/metrics` and the details of `/readyz`. Empty: `/readyz` says only "
        "ready or not ready, and `/metrics` is open (it holds counts, no paths or errors).",
        secret=True,
    ),
    Setting(
        "client_writes_per_minute",
        "600",
        "Writes (consents, admin changes) one client address may make per minute, IPv6 by "
        "/64, after a burst; more get 429 with Retry-After. 0: no limit.",
        _int,
    ),
    Setting("client_write_burst", "120", "Writes one client address may make at once.", _int),
    Setting(
        "subject_writes_per_minute",
        "12",
        "Writes per minute for one subject of a site, after a burst. 0: no limit.",
        _int,
    ),
    Setting("subject_write_burst", "6", "Writes one subject may get at once.", _int),
    Setting(
        "rate_limit_clients",
        "20000",
        "Client addresses, and subjects, the write limits remember (a new one displaces the "
        "one whose bucket is full soonest; 16 bytes each, per table).",
        _positive_int,
    ),
    Setting(
        "malloc_mmap_threshold",
        "131072",
        "Bytes from which malloc gives a block a mapping of its own, returned to the system "
        "when freed (glibc; pinned, not raised by each big free). 0: glibc's dynamic "
        "threshold, which left a worker ~15 MB bigger after 1M consents.",
        _int,
    ),
    Setting(
        "keepalive_timeout",
        "5",
        "Seconds an idle kept-alive connection stays open between requests.",
        _float,
    ),
    Setting(
        "header_timeout",
        "10",
        "Seconds a client has to send a request head, from connecting or from its first "
        "byte (slowloris); a partial head gets 408, a silent connection is closed.",
        _float,
    ),
    Setting(
        "body_timeout", "10", "Seconds a client has to send a request body after its head.", _float
    ),
    Setting(
        "max_connections",
        "0",
        "Open client connections at most; past it a new connection closes the one that has "
        "waited longest for a request (with N workers, each takes an Nth). 0: three quarters "
        "of the open-file limit less 128, per worker.",
        _int,
    ),
    Setting(
        "smtp_url",
        "",
        "SMTP server for rights-request codes: smtp://host:port, smtp+starttls://user:pass@host:587"
        " or smtps://user:pass@host:465. Empty: e-mail verification is off.",
        secret=True,
    ),
    Setting("smtp_from", "privacy@localhost", "Sender address of rights-request code e-mails."),
    Setting(
        "rights_client_per_hour",
        "20",
        "Rights requests and code checks one client address may make per hour (IPv6 by /64), "
        "that many at once at most; more get 429 with Retry-After. Staff requests made with a "
        "site API key are not counted. 0: no limit.",
        _int,
    ),
    Setting(
        "rights_subject_per_hour",
        "5",
        "Rights requests per hour for one subject or one identity of a site, that many at once "
        "at most. 0: no limit.",
        _int,
    ),
    Setting(
        "rights_codes_per_hour",
        "3",
        "Verification-code e-mails one e-mail address may get per hour, that many at once at "
        "most; more get 429 (the gateway cannot be used to flood an inbox). 0: no limit.",
        _int,
    ),
    Setting(
        "rights_client_codes_per_hour",
        "10",
        "Verification-code e-mails one client address may have sent per hour, that many at "
        "once at most. 0: no limit.",
        _int,
    ),
    Setting(
        "admin_session_minutes",
        "480",
        "Lifetime of an admin browser session opened at /admin/login (a signed cookie keyed by "
        "GATEWAY_ADMIN_TOKEN: rotating the token ends every session).",
        _positive_int,
    ),
)
