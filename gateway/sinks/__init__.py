"""Sinks chosen by settings: the primary store (SQLite or PostgreSQL) plus an optional webhook."""

from __future__ import annotations

from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.sinks.base import PermanentSinkError, Sink, SinkError, Store
from gateway.sinks.postgres import PostgresStore
from gateway.sinks.sqlite import FILE_NAME, SqliteStore
from gateway.sinks.webhook import WebhookSink

__all__ = ["PermanentSinkError", "Sink", "SinkError", "Store", "open_sinks", "store_for"]


def store_for(settings: Settings) -> Store:
    """The primary store named by ``store_url`` (not yet opened)."""
    url = settings.store_url.strip()
    if not url:
        return SqliteStore(settings.data_dir / FILE_NAME)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, pool_size=settings.store_pool_size)
    raise ConfigError(
        "GATEWAY_STORE_URL must be empty or a postgresql:// URL",
        hint="leave it empty for the embedded SQLite store",
    )


def open_sinks(settings: Settings) -> list[Sink]:
    """The primary store first, then the webhook when configured (none opened yet)."""
    sinks: list[Sink] = [store_for(settings)]
    if settings.webhook_url:
        if not settings.webhook_url.startswith(("http://", "https://")):
            raise ConfigError("GATEWAY_WEBHOOK_URL must be an http(s) URL")
        if not settings.webhook_secret:
            raise ConfigError(
                "GATEWAY_WEBHOOK_URL is set but GATEWAY_WEBHOOK_SECRET is empty",
                hint="set a shared secret so the receiver can check each batch's signature",
            )
        sinks.append(WebhookSink(settings.webhook_url, settings.webhook_secret))
    return sinks
