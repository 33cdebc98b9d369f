"""One settings table: name, default, help. It feeds the Settings defaults, validation, `--help` and
the README."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.errors import ConfigError

ENV_PREFIX = "GATEWAY_"


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _int(raw: str) -> int:
    return int(raw.strip())


def _positive_int(raw: str) -> int:
    value = int(raw.strip())
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def _float(raw: str) -> float:
    value = float(raw.strip())
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _str(raw: str) -> str:
    return raw.strip()


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _networks(raw: str) -> tuple[str, ...]:
    items = _csv(raw)
    for item in items:
        ipaddress.ip_network(item, strict=False)
    return items


def _key(raw: str) -> str:
    value = raw.strip()
    if value and len(value.encode()) < 32:
        raise ValueError("must be at least 32 bytes, or empty")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    help: str
    parse: Callable[[str], Any] = _str
    secret: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "Interface `serve` binds to."),
    Setting("port", "8000", "TCP port `serve` listens on.", _positive_int),
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
        "127.0.0.1,::1",
        "IPs/CIDRs whose forwarding and CDN headers are believed (comma separated).",
        _networks,
    ),
    Setting(
        "geo_headers",
        "cloudflare,cloudfront,vercel",
        "CDN geo header families read from trusted peers: cloudflare, cloudfront, vercel, "
        "fastly, akamai, custom.",
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
        "receipt_key",
        "",
        "Secret signing receipts. Empty: generated once into the data dir.",
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
    Setting("public_url", "", "External base URL used in record_url. Empty: from the request."),
    Setting("log_level", "info", "Log level.", _choice("debug", "info", "warning", "error")),
    Setting(
        "smtp_url",
        "",
        "SMTP server for rights-request codes: smtp://host:port, smtp+starttls://user:pass@host:587"
        " or smtps://user:pass@host:465. Empty: e-mail verification is off.",
        secret=True,
    ),
    Setting("smtp_from", "privacy@localhost", "Sender address of rights-request code e-mails."),
)

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
    durability: str = _default("durability")
    outbox_max_records: int = _default("outbox_max_records")
    forward_batch_size: int = _default("forward_batch_size")
    forward_linger: float = _default("forward_linger")
    forward_max_backoff: float = _default("forward_max_backoff")
    shutdown_drain: float = _default("shutdown_drain")
    receipt_key: str = _default("receipt_key")
    identity_key: str = _default("identity_key")
    admin_token: str = _default("admin_token")
    node_id: str = _default("node_id")
    cache_max_age: int = _default("cache_max_age")
    reload: bool = _default("reload")
    public_url: str = _default("public_url")
    log_level: str = _default("log_level")
    smtp_url: str = _default("smtp_url")
    smtp_from: str = _default("smtp_from")

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
