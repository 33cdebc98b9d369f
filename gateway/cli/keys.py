"""`consent-gateway keys create|list|revoke`: per-site API keys in the central store."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence

import asyncpg

from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.preferences import apikeys
from gateway.sinks import directory_for
from gateway.sinks.directory import Directory, StoredKey
from gateway.sites.sitefile import read_site


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


@contextlib.asynccontextmanager
async def _directory(settings: Settings) -> AsyncIterator[Directory]:
    """The central store's directory, with an unreachable store as a one-line error."""
    directory = directory_for(settings)
    try:
        await directory.open()
        yield directory
    except (OSError, TimeoutError, sqlite3.Error, asyncpg.PostgresError) as exc:
        raise ConfigError(
            f"the central store is unreachable: {exc}", where="GATEWAY_STORE_URL"
        ) from exc
    finally:
        await directory.close()


async def create(settings: Settings, site: str, name: str, scopes: Sequence[str]) -> list[str]:
    """Make a key; the last line is the key itself, shown this once."""
    read_site(settings.banners_dir / site)  # a key for a site that does not exist is a typo
    if not apikeys.NAME.match(name):
        raise ConfigError(
            f"invalid key name {name[:80]!r}",
            where="--name",
            hint="1-80 printable ASCII characters",
        )
    try:
        allowed = apikeys.check_scopes(scopes)
    except ValueError as exc:
        raise ConfigError(str(exc), where="--scope") from exc
    new = apikeys.generate()
    directory = directory_for(settings)
    await directory.open()
    try:
        await directory.add_key(StoredKey(new.key_id, site, name, allowed, new.secret_hash, _now()))
    finally:
        await directory.close()
    return [
        f"key id: {new.key_id}",
        f"site: {site}",
        f"name: {name}",
        f"scopes: {' '.join(allowed)}",
        "the key is shown only now; it is stored hashed and cannot be shown again:",
        new.key,
    ]


async def list_keys(settings: Settings, site: str | None) -> list[str]:
    async with _directory(settings) as directory:
        keys = await directory.list_keys(site)
    if not keys:
        return ["no API keys" + (f" for site {site}" if site else "")]
    rows = [("key id", "site", "created", "status", "name", "scopes")]
    for k in keys:
        status = "revoked" if k.revoked_at else "active"
        rows.append((k.key_id, k.site, k.created_at[:19] + "Z", status, k.name, " ".join(k.scopes)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[5]])
        for row in rows
    ]


async def revoke(settings: Settings, key_id: str) -> list[str]:
    if not apikeys.KEY_ID.match(key_id):
        raise ConfigError(f"invalid key id {key_id[:40]!r}", hint="as `keys list` shows it")
    async with _directory(settings) as directory:
        done = await directory.revoke_key(key_id, _now())
        known = done or await directory.get_key(key_id) is not None
    if not known:
        raise ConfigError(f"no API key {key_id}", hint="`consent-gateway keys list`")
    if not done:
        return [f"key {key_id} was already revoked"]
    return [f"revoked key {key_id}; every node refuses it within seconds"]
