"""The deployment's receipt and subject keys: where they come from, and the same everywhere.

Receipts must verify on every worker and every node, and a subject secret must derive the
same subject id wherever it is presented. So the keys are resolved once per node, before any
worker starts (`consent-gateway serve` does it in the supervisor and hands the result to every
worker it starts), from, in order:

1. settings: ``GATEWAY_RECEIPT_KEY`` (signs), ``GATEWAY_RECEIPT_KEYS_PREVIOUS`` (still
   verify), ``GATEWAY_SUBJECT_KEY`` (derives subject ids; the receipt key when empty);
2. with PostgreSQL, the central store's ``deployment_secrets`` row ``receipt_key``: the first
   node to start puts its data dir's key there (so a single node upgraded keeps its subject
   ids), or a new random one; every other node reads it. The data dir keeps a copy, used
   when the store is unreachable at a later start; a node's own earlier key is kept as a
   verify-only key (``receipt.key.previous``), so its earlier receipts still verify there;
3. with the embedded store (one node), the data dir's ``receipt.key``, made once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.recording.receipts import KEY_FILE, load_key

log = logging.getLogger("gateway.recording")

PREVIOUS_FILE = KEY_FILE + ".previous"
STORE_SECRET = "receipt_key"  # noqa: S105 (the name of a stored secret, not one)


class KeysUnavailable(ConfigError):
    """The central store holds the shared key but cannot be read now, and this node has no
    copy: recording waits (503) rather than sign with a key no other node knows."""


@dataclass(frozen=True)
class KeyRing:
    """Sign with ``current``; verify with it or any of ``previous``; derive ids with
    ``subject``."""

    current: bytes
    previous: tuple[bytes, ...]
    subject: bytes


async def resolve(settings: Settings) -> KeyRing:
    """The node's keys (reads the central store or the data dir when settings name none)."""
    if settings.receipt_key:
        current = settings.receipt_key.encode("utf-8")
    elif settings.store_url.startswith(("postgresql://", "postgres://")):
        current = await _from_store(settings)
    else:
        current = await asyncio.to_thread(load_key, settings)
    previous = [k.encode("utf-8") for k in settings.receipt_keys_previous]
    if not settings.receipt_key:
        previous += _read_previous(settings.data_dir)
    subject = settings.subject_key.encode("utf-8") if settings.subject_key else current
    return KeyRing(current, tuple(k for k in dict.fromkeys(previous) if k != current), subject)


def pinned(settings: Settings, ring: KeyRing) -> Settings:
    """``settings`` naming the resolved keys, for processes that must use exactly these."""
    return settings.replace(
        receipt_key=ring.current.decode("utf-8"),
        receipt_keys_previous=tuple(k.decode("utf-8") for k in ring.previous),
        subject_key=ring.subject.decode("utf-8"),
    )


async def _from_store(settings: Settings) -> bytes:
    path = Path(settings.data_dir) / KEY_FILE
    local = _read(path)
    # A short wait: with a copy in the data dir, an unreachable store only delays the start.
    from gateway.sinks.directory_postgres import PostgresDirectory  # asyncpg only when used

    directory = PostgresDirectory(settings.store_url, pool_size=1, connect_timeout=2.0)
    try:
        shared = await directory.deployment_secret(
            STORE_SECRET, lambda: local.decode("ascii") if local else secrets.token_hex(32)
        )
    except Exception as exc:  # unreachable or refusing: the copy of an earlier start serves
        if local is None:
            raise KeysUnavailable(
                f"cannot read the shared receipt key from the central store: {exc}",
                hint="set GATEWAY_RECEIPT_KEY (the same on every node), or start this node "
                "once while PostgreSQL is reachable",
            ) from exc
        log.warning("central store unreachable (%s): signing with the data dir's key copy", exc)
        return local
    finally:
        await directory.close()
    key = shared.encode("utf-8")
    if key != local:
        if local is not None:
            _append_previous(settings.data_dir, local)
        _write(path, key)
    return key


def _read(path: Path) -> bytes | None:
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the receipt key: {exc}", where=str(path)) from exc
    return key or None


def _write(path: Path, key: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # workers may race here
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot keep a copy of the shared receipt key in %s: %s", path, exc)


def _read_previous(data_dir: Path) -> list[bytes]:
    try:
        text = (Path(data_dir) / PREVIOUS_FILE).read_bytes()
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def _append_previous(data_dir: Path, key: bytes) -> None:
    if key in _read_previous(data_dir):
        return
    try:
        fd = os.open(Path(data_dir) / PREVIOUS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as handle:
            handle.write(key + b"\n")
            os.fsync(handle.fileno())
    except OSError as exc:
        log.warning("cannot keep this node's earlier receipt key: %s", exc)
