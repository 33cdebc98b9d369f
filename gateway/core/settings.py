"""The typed settings: frozen ``Settings`` with the table's defaults (core/settings_table.py),
loaded from defaults, then GATEWAY_* variables, then CLI flags; and the README's table."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.errors import ConfigError
from gateway.core.setting_types import ENV_PREFIX, Setting
from gateway.core.settings_table import SETTINGS

_BY_NAME = {s.name: s for s in SETTINGS}
_PATH_FIELDS = {"banners_dir", "locales_dir", "data_dir"}


def _default(name: str) -> Any:
    """A field's default from the table: its default text, parsed as a GATEWAY_* value is."""
    setting = _BY_NAME[name]
    return setting.parse(setting.default)


def _folder(name: str) -> Callable[[], Path]:
    """A folder field's default: the table's name, in the working directory at the time."""
    default = _BY_NAME[name].default
    return lambda: Path.cwd() / default


@dataclass(frozen=True)
class Settings:
    """Every setting, typed; the defaults are the table's (SETTINGS), never restated here."""

    host: str = _default("host")
    port: int = _default("port")
    workers: int = _default("workers")
    banners_dir: Path = field(default_factory=_folder("banners_dir"))
    locales_dir: Path = field(default_factory=_folder("locales_dir"))
    data_dir: Path = field(default_factory=_folder("data_dir"))
    geoip_db: str = _default("geoip_db")
    trusted_proxies: tuple[str, ...] = _default("trusted_proxies")
    geo_headers: tuple[str, ...] = _default("geo_headers")
    geo_country_header: str = _default("geo_country_header")
    geo_region_header: str = _default("geo_region_header")
    geo_cache_size: int = _default("geo_cache_size")
    store_url: str = _default("store_url")
    store_pool_size: int = _default("store_pool_size")
    webhook_url: str = _default("webhook_url")
    webhook_secret: str = _default("webhook_secret")
    webhook_format: str = _default("webhook_format")
    webhook_data: str = _default("webhook_data")
    nats_url: str = _default("nats_url")
    nats_stream: str = _default("nats_stream")
    nats_subject_prefix: str = _default("nats_subject_prefix")
    nats_duplicate_window: float = _default("nats_duplicate_window")
    durability: str = _default("durability")
    outbox_max_records: int = _default("outbox_max_records")
    forward_batch_size: int = _default("forward_batch_size")
    forward_linger: float = _default("forward_linger")
    forward_max_backoff: float = _default("forward_max_backoff")
    shutdown_drain: float = _default("shutdown_drain")
    outbox_checkpoint_mb: int = _default("outbox_checkpoint_mb")
    outbox_checkpoint_interval: float = _default("outbox_checkpoint_interval")
    task_max_backoff: float = _default("task_max_backoff")
    ready_min_free_mb: float = _default("ready_min_free_mb")
    ready_max_forward_lag: float = _default("ready_max_forward_lag")
    receipt_key: str = _default("receipt_key")
    receipt_keys_previous: tuple[str, ...] = _default("receipt_keys_previous")
    subject_key: str = _default("subject_key")
    audit_key: str = _default("audit_key")
    identity_key: str = _default("identity_key")
    admin_token: str = _default("admin_token")
    node_id: str = _default("node_id")
    cache_max_age: int = _default("cache_max_age")
    reload: bool = _default("reload")
    public_url: str = _default("public_url")
    log_level: str = _default("log_level")
    access_log: str = _default("access_log")
    access_log_sample: float = _default("access_log_sample")
    state_check_interval: int = _default("state_check_interval")
    public_hosts: tuple[str, ...] = _default("public_hosts")
    ops_token: str = _default("ops_token")
    client_writes_per_minute: int = _default("client_writes_per_minute")
    client_write_burst: int = _default("client_write_burst")
    subject_writes_per_minute: int = _default("subject_writes_per_minute")
    subject_write_burst: int = _default("subject_write_burst")
    rate_limit_clients: int = _default("rate_limit_clients")
    malloc_mmap_threshold: int = _default("malloc_mmap_threshold")
    keepalive_timeout: float = _default("keepalive_timeout")
    header_timeout: float = _default("header_timeout")
    body_timeout: float = _default("body_timeout")
    max_connections: int = _default("max_connections")
    smtp_url: str = _default("smtp_url")
    smtp_from: str = _default("smtp_from")
    rights_client_per_hour: int = _default("rights_client_per_hour")
    rights_subject_per_hour: int = _default("rights_subject_per_hour")
    rights_codes_per_hour: int = _default("rights_codes_per_hour")
    rights_client_codes_per_hour: int = _default("rights_client_codes_per_hour")
    admin_session_minutes: int = _default("admin_session_minutes")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def effective_node_id(self) -> str:
        return self.node_id or socket.gethostname()

    @property
    def geoip_path(self) -> Path | None:
        """The configured database, else the one `geo build` wrote, else none."""
        if self.geoip_db:
            return Path(self.geoip_db)
        built = self.data_dir / "geo" / "country.mmdb"
        return built if built.exists() else None


def _convert(setting: Setting, raw: str) -> Any:
    try:
        value = setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(
            f"invalid value {raw!r} for {setting.env}",
            hint=f"{exc}; {setting.help}",
        ) from exc
    if setting.name in _PATH_FIELDS:
        return Path(value).expanduser().resolve()
    return value


def load_settings(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build settings from defaults, then ``GATEWAY_*`` variables, then CLI overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = env.get(setting.env)
        values[setting.name] = _convert(setting, setting.default if raw is None else raw)
    unknown = sorted(
        key
        for key in env
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() not in _BY_NAME
    )
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]}",
            hint="see `consent-gateway serve --help` for the list of settings",
        )
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        setting = _BY_NAME[name]
        values[name] = _convert(setting, value) if isinstance(value, str) else value
    return Settings(**values)


def settings_table_markdown() -> str:
    """The README's configuration table, generated so it never drifts from the code."""
    rows = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(empty)"
        rows.append(f"| `{s.env}` | `{s.flag}` | {default} | {s.help} |")
    return "\n".join(rows)
