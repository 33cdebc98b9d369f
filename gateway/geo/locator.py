"""Where a visitor is: a trusted CDN's geo headers, else the GeoIP database (the Locator)."""

from __future__ import annotations

import datetime
import functools
import ipaddress
import itertools
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import maxminddb
from starlette.datastructures import Headers

from gateway.core.errors import GeoDatabaseError
from gateway.core.model import UNKNOWN_REGION, Region
from gateway.core.settings import Settings
from gateway.geo.cdn_headers import (
    country_code,
    header_pairs,
    pair_keys,
    pair_names,
    region_from_found,
    subdivision_code,
)
from gateway.geo.clientip import (
    IPAddress,
    ProxyTrust,
    canonical_ip,
    client_header_keys,
    collect_headers,
    parsed_ip,
    vendor_keys,
    vouched_client,
)

logger = logging.getLogger(__name__)

# database_type words whose records carry GeoIP2's country/subdivisions shape (Enterprise is a
# superset of City); anything else (ASN, Anonymous-IP, ISP, …) cannot answer "where".
DATABASE_KINDS = ("City", "Country", "Enterprise")

# Databases up to this many search-tree nodes are walked completely at open time
# (the MaxMind test files: ~1.5k nodes, ~5 ms); larger ones are sampled.
FULL_WALK_MAX_NODES = 50_000
SAMPLE_WALK_NETWORKS = 5_000
SAMPLE_LOOKUPS = 20_000


def _masks_by_top_byte(*cidrs: str) -> dict[int, tuple[tuple[int, int], ...]]:
    """(network, mask) integers filed under each top byte they cover, so most checks are one
    dict miss: ipaddress's own is_global walks network objects and costs more than a lookup."""
    table: dict[int, list[tuple[int, int]]] = {}
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr)
        shift = net.max_prefixlen - 8
        first, last = int(net.network_address) >> shift, int(net.broadcast_address) >> shift
        for top in range(first, last + 1):
            table.setdefault(top, []).append((int(net.network_address), int(net.netmask)))
    return {top: tuple(masks) for top, masks in table.items()}


# Not on the public internet, so no database can place them.
_NON_PUBLIC = {
    4: _masks_by_top_byte(
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3",
    ),
    6: _masks_by_top_byte(
        "::/8", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8"
    ),
}  # fmt: skip


def _is_public(addr: IPAddress) -> bool:
    value = int(addr)
    masks = _NON_PUBLIC[addr.version].get(value >> (addr.max_prefixlen - 8), ())
    return all(value & mask != base for base, mask in masks)


def _iso_code(part: object) -> str:
    code = part.get("iso_code") if isinstance(part, dict) else None
    return code if isinstance(code, str) else ""


def region_of_record(record: object) -> Region:
    """Region from a GeoIP2 City or Country record (a plain dict as maxminddb decodes it)."""
    if not isinstance(record, dict):
        return UNKNOWN_REGION
    subdivisions = record.get("subdivisions")
    first = _iso_code(subdivisions[0]) if isinstance(subdivisions, list) and subdivisions else ""
    return _geoip_region(
        _iso_code(record.get("country")), _iso_code(record.get("registered_country")), first
    )


@functools.lru_cache(maxsize=4096)
def _geoip_region(country_raw: str, registered_raw: str, subdivision_raw: str) -> Region:
    # A database holds a few thousand distinct answers at most: build each Region once.
    country = country_code(country_raw)
    if country is None:
        registered = country_code(registered_raw)
        return Region(registered, None, "geoip") if registered else UNKNOWN_REGION
    subdivision = subdivision_code(subdivision_raw, country) if subdivision_raw else None
    return Region(country, subdivision, "geoip")


class GeoDatabase:
    """A MaxMind-format database (City or Country), checked at open, answering regions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # The maxminddb reader geoip2 wraps, used directly: geoip2's model objects made a
            # lookup ~7x slower, and City and Country records share the fields we read.
            self._reader = maxminddb.open_database(str(path))
        except FileNotFoundError:
            raise GeoDatabaseError(
                f"GeoIP database not found: {path}",
                hint="set GATEWAY_GEOIP_DB to an .mmdb file, or run `consent-gateway geo build`",
            ) from None
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise GeoDatabaseError(
                f"cannot open GeoIP database {path}: {exc}",
                hint="the file is not a valid MaxMind DB; download it again or rebuild it "
                "with `consent-gateway geo build`",
            ) from None
        try:
            meta = self._reader.metadata()
            self.database_type: str = meta.database_type
            if not any(kind in self.database_type for kind in DATABASE_KINDS):
                raise GeoDatabaseError(
                    f"unsupported GeoIP database type {self.database_type!r} in {path}",
                    hint="use a City, Country or Enterprise database (e.g. GeoLite2-Country.mmdb), "
                    "or the one `consent-gateway geo build` writes",
                )
            self.validation = self._validate(meta.node_count, meta.ip_version)
        except BaseException:
            self._reader.close()
            raise

    def _validate(self, node_count: int, ip_version: int) -> str:
        """Walk the whole tree of a small database, or sample a big one; refuse corrupt data."""
        reader = self._reader
        try:
            if node_count <= FULL_WALK_MAX_NODES:
                for _ in reader:
                    pass
                return "full"
            for _ in itertools.islice(reader, SAMPLE_WALK_NETWORKS):
                pass
            # Not security: a fixed seed so the same file is always checked the same way.
            rng = random.Random(node_count)  # noqa: S311
            for i in range(SAMPLE_LOOKUPS):
                if i % 2 or ip_version == 4:
                    reader.get(ipaddress.IPv4Address(rng.getrandbits(32)))
                else:  # global unicast 2000::/3, where IPv6 data lives
                    reader.get(ipaddress.IPv6Address((1 << 125) | rng.getrandbits(125)))
            return "sampled"
        except (maxminddb.InvalidDatabaseError, ValueError, TypeError, KeyError) as exc:
            raise GeoDatabaseError(
                f"GeoIP database {self.path} is corrupt: {exc}",
                hint="download it again, or rebuild it with `consent-gateway geo build`",
            ) from None

    def lookup(self, ip: str) -> Region:
        """Region of ``ip`` (source "geoip"); unknown for private, invalid or absent addresses."""
        addr = parsed_ip(ip)
        if addr is None or not _is_public(addr):
            return UNKNOWN_REGION
        try:
            record = self._reader.get(addr)
        except ValueError:  # an IPv6 address in an IPv4-only database
            return UNKNOWN_REGION
        except maxminddb.InvalidDatabaseError as exc:
            logger.error("geoip lookup failed: %s (%s, address %s)", exc, self.path, addr)
            return UNKNOWN_REGION
        return region_of_record(record)

    def info(self) -> dict[str, Any]:
        """What /readyz shows about the database."""
        meta = self._reader.metadata()
        built = datetime.datetime.fromtimestamp(meta.build_epoch, tz=datetime.UTC)
        return {
            "path": str(self.path),
            "type": meta.database_type,
            "build_date": built.date().isoformat(),
            "node_count": meta.node_count,
            "ip_version": meta.ip_version,
            "description": meta.description.get("en", ""),
            "validation": self.validation,
        }

    def close(self) -> None:
        self._reader.close()


class Locator:
    """Client IP and region of a request: trusted CDN header, else GeoIP, else unknown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.trust = ProxyTrust(settings.trusted_proxies)
        self._pairs = header_pairs(
            settings.geo_headers, settings.geo_country_header, settings.geo_region_header
        )
        self._pair_keys = pair_keys(self._pairs)
        # Everything a trusted peer's request is read for, collected in one pass.
        self._vendors = vendor_keys(settings.geo_headers)
        self._trusted_names = pair_names(self._pair_keys) | client_header_keys(self._vendors)
        self.database: GeoDatabase | None = None
        self._lookup: Callable[[str], Region] = _unknown

    def load(self) -> None:
        """Open the configured database, if any; a bad one is a start-up error."""
        path = self.settings.geoip_path
        if path is None:
            return
        database = GeoDatabase(path)
        self.close()
        self.database = database
        # Keyed by the canonical IP text; lru_cache is C code, so a hit costs well under 1 µs.
        self._lookup = functools.lru_cache(maxsize=self.settings.geo_cache_size)(database.lookup)

    @property
    def geo_header_names(self) -> tuple[str, ...]:
        """Lower-case names of the headers that can decide the region (for ``Vary``)."""
        return tuple(dict.fromkeys(n for pair in self._pairs for n in pair if n))

    def locate(self, peer: str | None, headers: Headers) -> tuple[str | None, Region]:
        """The client IP and its region for one request."""
        peer_ip = canonical_ip(peer)
        if not self.trust.trusts(peer_ip):
            return peer_ip, (self._lookup(peer_ip) if peer_ip else UNKNOWN_REGION)
        found = collect_headers(headers, self._trusted_names)
        ip = vouched_client(peer_ip, found, self.trust, self._vendors)
        region = region_from_found(found, self._pair_keys)
        if region is not None:
            return ip, region
        return ip, (self._lookup(ip) if ip else UNKNOWN_REGION)

    def client(self, peer: str | None, headers: Headers) -> str | None:
        """The client IP alone (no region), after proxy trust."""
        peer_ip = canonical_ip(peer)
        if not self.trust.trusts(peer_ip):
            return peer_ip
        found = collect_headers(headers, client_header_keys(self._vendors))
        return vouched_client(peer_ip, found, self.trust, self._vendors)

    def cache_info(self) -> dict[str, int]:
        """Hits, misses and size of the lookup cache (for /metrics)."""
        info = getattr(self._lookup, "cache_info", None)
        if info is None:
            return {"hits": 0, "misses": 0, "size": 0, "max_size": 0}
        stats = info()
        return {
            "hits": stats.hits,
            "misses": stats.misses,
            "size": stats.currsize,
            "max_size": stats.maxsize or 0,
        }

    def database_info(self) -> dict[str, Any]:
        """The database in use (path, type, build date, node count), or ``{"loaded": False}``."""
        if self.database is None:
            return {"loaded": False}
        return {"loaded": True, **self.database.info()}

    def close(self) -> None:
        if self.database is not None:
            self.database.close()
            self.database = None
        self._lookup = _unknown


def _unknown(ip: str) -> Region:
    return UNKNOWN_REGION
