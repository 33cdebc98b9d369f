"""`consent-gateway keys create|list|revoke`: per-site API keys in the central store."""

from __future__ import annotations

import time
from collections.abc import Sequence

from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.preferences import apikeys
from gateway.preferences.service import directory_for
from gateway.sinks.directory import StoredKey
from gateway.sites.sitefile import read_site


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


async def create(settings: Settings, site: str, name: str, scopes: Sequence[str]) -> list[str]:
    """Make a key; the last line is the key itself, shown this once."""
    read_site(settings.banners_dir / site)  # a key for a site that does not exist is a typo
    if not apikeys.NAME.match(name):
        raise ConfigError(f"invalid key name {name[:80]!r}", where="--name",
                          hint="1-80 printable ASCII characters")  # fmt: skip
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
    directory = directory_for(settings)
    await directory.open()
    try:
        keys = await directory.list_keys(site)
    finally:
        await directory.close()
    lines = ["key id        site  created               status   name  scopes"]
    for k in keys:
        status = "revoked" if k.revoked_at else "active"
        lines.append(f"{k.key_id}  {k.site}  {k.created_at[:19]}Z  {status:<7}  {k.name}  "
                     f"{' '.join(k.scopes)}")  # fmt: skip
    if not keys:
        lines = ["no API keys" + (f" for site {site}" if site else "")]
    return lines


async def revoke(settings: Settings, key_id: str) -> list[str]:
    if not apikeys.KEY_ID.match(key_id):
        raise ConfigError(f"invalid key id {key_id[:40]!r}", hint="as `keys list` shows it")
    directory = directory_for(settings)
    await directory.open()
    try:
        done = await directory.revoke_key(key_id, _now())
        known = done or await directory.get_key(key_id) is not None
    finally:
        await directory.close()
    if not known:
        raise ConfigError(f"no API key {key_id}", hint="`consent-gateway keys list`")
    if not done:
        return [f"key {key_id} was already revoked"]
    return [f"revoked key {key_id}; every node refuses it within seconds"]
