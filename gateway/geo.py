"""Where a visitor is: client IP through trusted proxies, CDN geo headers, the GeoIP database."""

from __future__ import annotations

import datetime
import functools
import ipaddress
import itertools
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import geoip2.database
import geoip2.errors
import maxminddb
from starlette.datastructures import Headers

from gateway.errors import BadRequest, ConfigError, GeoDatabaseError
from gateway.model import UNKNOWN_REGION, Region
from gateway.settings import Settings

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Vendor headers carrying the client address, believed (in this order) only from trusted peers.
VENDOR_IP_HEADERS: tuple[str, ...] = (
    "cf-connecting-ip",
    "true-client-ip",
    "cloudfront-viewer-address",
)
FORWARDED_FOR = "x-forwarded-for"
MAX_ADDRESS_TEXT = 64  # longest IPv6 with zone id and port fits well within this
MAX_FORWARDED_FOR = 4096
MAX_HOPS = 64

# CDN geo header families: (country header, subdivision header). Names are lower case.
GEO_HEADER_FAMILIES: Mapping[str, tuple[str, str]] = {
    "cloudflare": ("cf-ipcountry", "cf-region-code"),
    "cloudfront": ("cloudfront-viewer-country", "cloudfront-viewer-country-region"),
    "vercel": ("x-vercel-ip-country", "x-vercel-ip-country-region"),
}
# Akamai EdgeScape: one header of comma-separated key=value pairs (country_code, region_code, …).
AKAMAI_EDGESCAPE = "x-akamai-edgescape"
# Cloudflare: XX = no data, T1 = Tor; "**" and ZZ are used by others for unknown.
UNKNOWN_COUNTRIES = frozenset({"XX", "T1", "ZZ", "A1", "A2", "AP", "EU", "O1"})

# Databases up to this many search-tree nodes are walked completely at open time
# (the MaxMind test files: ~1.5k nodes, ~5 ms); larger ones are sampled.
FULL_WALK_MAX_NODES = 50_000
SAMPLE_WALK_NETWORKS = 5_000
SAMPLE_LOOKUPS = 20_000


def _parse_ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@functools.lru_cache(maxsize=16384)
def _canonical(text: str) -> str | None:
    """``::ffff:a.b.c.d`` → ``a.b.c.d``, ``2001:DB8::0:1`` → ``2001:db8::1``; None if not an IP."""
    ip = _parse_ip(text)
    return None if ip is None else str(ip)


def canonical_ip(text: str | None) -> str | None:
    """The canonical text of an IP address, or None if ``text`` is not one."""
    if not text or len(text) > MAX_ADDRESS_TEXT:
        return None
    return _canonical(text)


class ProxyTrust:
    """The peers whose forwarding and CDN headers are believed."""

    def __init__(self, networks: Iterable[str]) -> None:
        self._hosts: set[IPAddress] = set()
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in networks:
            try:
                if "/" in item:
                    net = ipaddress.ip_network(item.strip(), strict=False)
                    self._networks.append(net)
                    mapped = _mapped_network(net)
                    if mapped is not None:
                        self._networks.append(mapped)
                else:
                    host = _parse_ip(item.strip())
                    if host is None:
                        raise ValueError("not an IP address")
                    self._hosts.add(host)
            except ValueError as exc:
                raise ConfigError(
                    f"invalid trusted proxy {item!r}: {exc}",
                    hint="list IP addresses or CIDR networks, e.g. 10.0.0.0/8,::1",
                    where="GATEWAY_TRUSTED_PROXIES",
                ) from None
        # Peers repeat (a handful of proxies), so verdicts are cached; bounded against floods.
        self._verdict: Callable[[str], bool] = functools.lru_cache(maxsize=4096)(self._compute)

    def trusts(self, ip: str | None) -> bool:
        """True if ``ip`` (any spelling, v4 or v6) is a trusted proxy."""
        if not ip or len(ip) > MAX_ADDRESS_TEXT:
            return False
        return self._verdict(ip)

    def _compute(self, text: str) -> bool:
        ip = _parse_ip(text)
        if ip is None:
            return False
        return ip in self._hosts or any(ip in net for net in self._networks)

    def __repr__(self) -> str:
        items = [str(h) for h in self._hosts] + [str(n) for n in self._networks]
        return f"ProxyTrust({sorted(items)!r})"


def _mapped_network(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> ipaddress.IPv4Network | None:
    """``::ffff:10.0.0.0/104`` also trusts ``10.0.0.0/8``, since peers are normalised to IPv4."""
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        base = net.network_address.ipv4_mapped
        if base is not None:
            return ipaddress.IPv4Network((base, net.prefixlen - 96))
    return None


def _collect(headers: Headers, names: frozenset[bytes]) -> dict[bytes, list[bytes]]:
    """One pass over the raw headers, keeping every line of the ones we read."""
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers.raw:
        if name in names:
            found.setdefault(name, []).append(value)
    return found


def _bad(header: str, problem: str) -> BadRequest:
    return BadRequest("invalid_header", f"{header}: {problem}", field=header)


def _vendor_ip(header: str, values: list[bytes]) -> str:
    if len(values) > 1:
        raise _bad(header, "sent more than once")
    text = values[0].decode("latin-1").strip()
    if len(text) > MAX_ADDRESS_TEXT:
        raise _bad(header, "value too long")
    if header == "cloudfront-viewer-address":
        # "198.51.100.10:46532", and for IPv6 the address and port without brackets.
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise _bad(header, "expected ADDRESS:PORT")
        text = host
    ip = canonical_ip(text)
    if ip is None:
        raise _bad(header, "not an IP address")
    return ip


def _hop_address(hop: str) -> str | None:
    """One X-Forwarded-For entry (``ip``, ``ip:port``, ``[ipv6]:port``) → canonical IP."""
    if hop.startswith("["):
        end = hop.find("]")
        rest = hop[end + 1 :] if end > 0 else "?"
        if rest and not (rest[0] == ":" and rest[1:].isdigit()):
            raise _bad("X-Forwarded-For", "malformed bracketed address")
        hop = hop[1:end]
    elif hop.count(":") == 1:
        host, _, port = hop.partition(":")
        if not port.isdigit():
            raise _bad("X-Forwarded-For", "malformed address:port")
        hop = host
    if hop.lower() == "unknown":
        return None  # a proxy that could not tell (squid, RFC 7239 style): nobody to believe
    ip = canonical_ip(hop)
    if ip is None:
        raise _bad("X-Forwarded-For", "entry is not an IP address")
    return ip


def _walk_forwarded_for(values: list[bytes], peer: str | None, trust: ProxyTrust) -> str | None:
    if sum(len(v) for v in values) > MAX_FORWARDED_FOR:
        raise _bad("X-Forwarded-For", "value too long")
    hops = [h.strip() for v in values for h in v.decode("latin-1").split(",")]
    hops = [h for h in hops if h]
    if len(hops) > MAX_HOPS:
        raise _bad("X-Forwarded-For", "too many hops")
    if not hops:
        return peer
    # Each proxy appends the address it saw, so the first untrusted one from the right is the
    # client as far as anyone we trust can vouch; entries left of it may be forged.
    addresses = [_hop_address(h) for h in hops]
    for ip in reversed(addresses):
        if not trust.trusts(ip):
            return ip
    return addresses[0]  # every hop is one of ours: the client is a proxy itself


_CLIENT_HEADERS = frozenset(n.encode() for n in (*VENDOR_IP_HEADERS, FORWARDED_FOR))


def client_ip(peer: str | None, headers: Headers, trust: ProxyTrust) -> str | None:
    """The visitor's IP: the peer, unless it is a trusted proxy vouching for someone else."""
    peer_ip = canonical_ip(peer)
    if not trust.trusts(peer_ip):
        return peer_ip  # an untrusted peer's headers are not even parsed
    found = _collect(headers, _CLIENT_HEADERS)
    for name in VENDOR_IP_HEADERS:
        values = found.get(name.encode())
        if values:
            return _vendor_ip(name, values)
    values = found.get(FORWARDED_FOR.encode())
    return _walk_forwarded_for(values, peer_ip, trust) if values else peer_ip


def _country(value: str) -> str | None:
    code = value.strip().upper()
    if len(code) != 2 or not code.isascii() or not code.isalpha() or code in UNKNOWN_COUNTRIES:
        return None
    return code


def _subdivision(value: str, country: str) -> str | None:
    """ISO 3166-2 suffix ("CA" from "CA" or "US-CA"); anything malformed is dropped."""
    code = value.strip().upper()
    prefix, dash, suffix = code.partition("-")
    if dash:
        if prefix != country:
            return None
        code = suffix
    if 1 <= len(code) <= 3 and code.isascii() and code.isalnum():
        return code
    return None


def _edgescape(value: str) -> tuple[str, str]:
    fields = dict(part.partition("=")[::2] for part in value.split(","))
    return fields.get("country_code", ""), fields.get("region_code", "")


def header_pairs(
    families: Sequence[str], country_header: str, region_header: str
) -> tuple[tuple[str, str], ...]:
    """(country, subdivision) header names to read, in order; unknown families are an error."""
    pairs: list[tuple[str, str]] = []
    custom = (country_header.strip().lower(), region_header.strip().lower())
    for family in families:
        name = family.strip().lower()
        if name in GEO_HEADER_FAMILIES:
            pairs.append(GEO_HEADER_FAMILIES[name])
        elif name == "akamai":
            pairs.append((AKAMAI_EDGESCAPE, ""))
        elif name in ("custom", "fastly"):
            # Fastly sends no geo headers by default: VCL sets them, under names the operator picks.
            if not custom[0]:
                raise ConfigError(
                    f"geo header family {name!r} needs GATEWAY_GEO_COUNTRY_HEADER",
                    hint="name the header your CDN sets to the visitor's country "
                    "(Fastly: client.geo.country_code) and, optionally, "
                    "GATEWAY_GEO_REGION_HEADER (client.geo.region)",
                    where="GATEWAY_GEO_HEADERS",
                )
            pairs.append(custom)
        else:
            raise ConfigError(
                f"unknown geo header family {family!r}",
                hint="use cloudflare, cloudfront, vercel, fastly, akamai or custom",
                where="GATEWAY_GEO_HEADERS",
            )
    if custom[0] and custom not in pairs:
        pairs.insert(0, custom)  # a configured header is the operator's explicit choice
    return tuple(dict.fromkeys(pairs))


def region_from_headers(
    headers: Headers, families: Sequence[str], country_header: str, region_header: str
) -> Region | None:
    """The region a trusted CDN put in its headers, or None. Call only for trusted peers."""
    pairs = header_pairs(families, country_header, region_header)
    return _region_from_pairs(headers, pairs, _names(pairs))


def _names(pairs: tuple[tuple[str, str], ...]) -> frozenset[bytes]:
    return frozenset(name.encode("latin-1") for pair in pairs for name in pair if name)


def _region_from_pairs(
    headers: Headers, pairs: tuple[tuple[str, str], ...], names: frozenset[bytes]
) -> Region | None:
    found = _collect(headers, names)
    for country_name, region_name in pairs:
        lines = found.get(country_name.encode("latin-1"))
        if not lines:
            continue
        raw = lines[0].decode("latin-1")
        region_lines = found.get(region_name.encode("latin-1")) if region_name else None
        region_raw = region_lines[0].decode("latin-1") if region_lines else ""
        if country_name == AKAMAI_EDGESCAPE:
            raw, region_raw = _edgescape(raw)
        country = _country(raw)
        if country is None:
            continue  # "unknown" from this CDN: let the next source try
        return Region(country, _subdivision(region_raw, country) or None, "header")
    return None


class GeoDatabase:
    """A MaxMind-format database (City or Country), checked at open, answering regions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._reader = geoip2.database.Reader(str(path))
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
            if "City" in self.database_type:
                self._query: Callable[[str], Any] = self._reader.city
            elif "Country" in self.database_type:
                self._query = self._reader.country
            else:
                raise GeoDatabaseError(
                    f"unsupported GeoIP database type {self.database_type!r} in {path}",
                    hint="use a City or Country database (e.g. GeoLite2-Country.mmdb), "
                    "or the one `consent-gateway geo build` writes",
                )
            self.validation = self._validate(meta.node_count, meta.ip_version)
        except BaseException:
            self._reader.close()
            raise

    def _validate(self, node_count: int, ip_version: int) -> str:
        """Walk the whole tree of a small database, or sample a big one; refuse corrupt data."""
        reader = self._raw_reader()
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

    def _raw_reader(self) -> maxminddb.Reader:
        # geoip2 keeps its maxminddb reader private; the walk needs it, lookups do not.
        raw: maxminddb.Reader = self._reader._db_reader
        return raw

    def lookup(self, ip: str) -> Region:
        """Region of ``ip`` (source "geoip"); unknown for private, invalid or absent addresses."""
        addr = _parse_ip(ip) if len(ip) <= MAX_ADDRESS_TEXT else None
        if addr is None or not addr.is_global:
            return UNKNOWN_REGION
        try:
            answer = self._query(str(addr))
        except (geoip2.errors.AddressNotFoundError, ValueError):
            return UNKNOWN_REGION
        except maxminddb.InvalidDatabaseError as exc:
            logger.error("geoip lookup failed: %s (%s, address %s)", exc, self.path, addr)
            return UNKNOWN_REGION
        country = _country(answer.country.iso_code or "")
        if country is None:
            registered = _country(answer.registered_country.iso_code or "")
            return Region(registered, None, "geoip") if registered else UNKNOWN_REGION
        subdivisions = getattr(answer, "subdivisions", ())
        first = subdivisions[0].iso_code if subdivisions else None
        return Region(country, _subdivision(first, country) if first else None, "geoip")

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
        self._pair_names = _names(self._pairs)
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

    def locate(self, peer: str | None, headers: Headers) -> tuple[str | None, Region]:
        """The client IP and its region for one request."""
        ip = client_ip(peer, headers, self.trust)
        if self._pairs and self.trust.trusts(peer):
            region = _region_from_pairs(headers, self._pairs, self._pair_names)
            if region is not None:
                return ip, region
        if ip is None:
            return None, UNKNOWN_REGION
        return ip, self._lookup(ip)

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
