"""Sinks chosen by settings: the primary store (SQLite or PostgreSQL), then optionally a
webhook and a NATS JetStream stream."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.sinks.base import PermanentSinkError, Sink, SinkError, Store
from gateway.sinks.directory import Directory
from gateway.sinks.directory_sqlite import SqliteDirectory
from gateway.sinks.sqlite import FILE_NAME, SqliteStore

# Imported only when configured, so that a worker on the embedded store does not carry them
# (issue 15, a worker's memory): nats-py and aiohttp weigh ~20 MB, asyncpg (PostgreSQL)
# ~5 MB, the webhook's httpx client is imported by whoever uses it.
if TYPE_CHECKING:
    from gateway.sinks.jetstream import JetStreamSink

__all__ = [
    "PermanentSinkError",
    "Sink",
    "SinkError",
    "Store",
    "directory_for",
    "open_sinks",
    "store_for",
]


def store_for(settings: Settings) -> Store:
    """The primary store named by ``store_url`` (not yet opened)."""
    url = settings.store_url.strip()
    if not url:
        return SqliteStore(settings.data_dir / FILE_NAME)
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.sinks.postgres import PostgresStore

        return PostgresStore(url, pool_size=settings.store_pool_size)
    raise ConfigError(
        "GATEWAY_STORE_URL must be empty or a postgresql:// URL",
        hint="leave it empty for the embedded SQLite store",
    )


def directory_for(settings: Settings) -> Directory:
    """The directory in the central store named by ``store_url`` (not yet opened)."""
    url = settings.store_url.strip()
    if not url:
        return SqliteDirectory(settings.data_dir / FILE_NAME)
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.sinks.directory_postgres import PostgresDirectory

        return PostgresDirectory(url)
    raise ConfigError("GATEWAY_STORE_URL must be empty or a postgresql:// URL")


def open_sinks(settings: Settings) -> list[Sink]:
    """The primary store first, then the webhook and NATS when configured (none opened)."""
    sinks: list[Sink] = [store_for(settings)]
    if settings.webhook_url:
        if not settings.webhook_url.startswith(("http://", "https://")):
            raise ConfigError("GATEWAY_WEBHOOK_URL must be an http(s) URL")
        if not settings.webhook_secret:
            raise ConfigError(
                "GATEWAY_WEBHOOK_URL is set but GATEWAY_WEBHOOK_SECRET is empty",
                hint="set a shared secret so the receiver can check each batch's signature",
            )
        from gateway.sinks.webhook import EventWebhookSink, WebhookSink

        cloudevents = settings.webhook_format == "cloudevents"
        if settings.webhook_data == "events":
            sinks.append(
                EventWebhookSink(
                    settings.webhook_url,
                    settings.webhook_secret,
                    directory_for(settings),
                    cloudevents=cloudevents,
                )
            )
        else:
            sinks.append(
                WebhookSink(settings.webhook_url, settings.webhook_secret, cloudevents=cloudevents)
            )
    if settings.nats_url:
        sinks.append(nats_sink(settings))
    return sinks


def nats_sink(settings: Settings) -> JetStreamSink:
    """The JetStream sink the settings describe (not yet opened)."""
    if not settings.nats_url.startswith(("nats://", "tls://")):
        raise ConfigError("GATEWAY_NATS_URL must be a nats:// or tls:// URL")
    for name, value in (
        ("stream", settings.nats_stream),
        ("subject_prefix", settings.nats_subject_prefix),
    ):
        if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", value) or (
            name == "stream" and "." in value
        ):
            raise ConfigError(
                f"GATEWAY_NATS_{name.upper()} {value!r} is not a valid NATS name",
                hint="letters, digits, - and _ (the prefix may have dot-separated tokens)",
            )
    from gateway.sinks.jetstream import JetStreamSink

    return JetStreamSink(
        settings.nats_url,
        stream=settings.nats_stream,
        subject_prefix=settings.nats_subject_prefix,
        duplicate_window=settings.nats_duplicate_window,
    )
