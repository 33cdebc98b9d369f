"""Where a visitor is: client IP through trusted proxies, CDN geo headers, the GeoIP database."""

from __future__ import annotations

import datetime
import functools
import ipaddress
import itertools
import logging
import random
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

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

# database_type words whose records carry GeoIP2's country/subdivisions shape (Enterprise is a
# superset of City); anything else (ASN, Anonymous-IP, ISP, …) cannot answer "where".
DATABASE_KINDS = ("City", "Country", "Enterprise")

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


_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


@functools.lru_cache(maxsize=65536)
def _address(text: str) -> tuple[IPAddress, str] | None:
    """Parsed once per distinct text: the address and its canonical spelling, or None.

    ``::ffff:a.b.c.d`` → ``a.b.c.d``, ``2001:DB8::0:1`` → ``2001:db8::1``. Cached because the
    same peer text is checked for trust, canonicalised and looked up in one request.
    """
    # inet_pton is C and ~4x faster than ipaddress; ipaddress handles what it refuses.
    try:
        # glibc accepts only plain dotted quads here, so the text is already canonical.
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text)), text
    except (OSError, ValueError):  # ValueError: an embedded NUL
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        ip = _parse_ip(text)  # e.g. a zone id: fe80::1%eth0
        return None if ip is None else (ip, str(ip))
    if packed.startswith(_MAPPED_PREFIX):
        v4 = ipaddress.IPv4Address(packed[12:])
        return v4, str(v4)
    v6 = ipaddress.IPv6Address(packed)
    if packed.startswith(bytes(12)):
        return v6, str(v6)  # ::a.b.c.d: glibc and ipaddress spell it differently
    return v6, socket.inet_ntop(socket.AF_INET6, packed)


def _parsed(text: str | None) -> IPAddress | None:
    if not text or len(text) > MAX_ADDRESS_TEXT:
        return None
    found = _address(text)
    return None if found is None else found[0]


def canonical_ip(text: str | None) -> str | None:
    """The canonical text of an IP address, or None if ``text`` is not one."""
    if not text or len(text) > MAX_ADDRESS_TEXT:
        return None
    found = _address(text)
    return None if found is None else found[1]


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
        # (network, mask) integers per IP version: ``ip in network`` costs ~1 µs per network.
        self._masks: dict[int, tuple[tuple[int, int], ...]] = {
            version: tuple(
                (int(n.network_address), int(n.netmask))
                for n in self._networks
                if n.version == version
            )
            for version in (4, 6)
        }
        # Peers repeat (a handful of proxies), so verdicts are cached; bounded against floods.
        self._verdict: Callable[[str], bool] = functools.lru_cache(maxsize=4096)(self._compute)

    def trusts(self, ip: str | None) -> bool:
        """True if ``ip`` (any spelling, v4 or v6) is a trusted proxy."""
        if not ip or len(ip) > MAX_ADDRESS_TEXT:
            return False
        return self._verdict(ip)

    def _compute(self, text: str) -> bool:
        ip = _parsed(text)
        if ip is None:
            return False
        if ip in self._hosts:
            return True
        value = int(ip)
        return any(value & mask == base for base, mask in self._masks[ip.version])

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
        if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
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
        if rest and not (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit()):
            raise _bad("X-Forwarded-For", "malformed bracketed address")
        hop = hop[1:end]
    elif hop.count(":") == 1:
        host, _, port = hop.partition(":")
        if not (port.isascii() and port.isdigit()):
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
    # client as far as anyone we trust can vouch. Entries left of it are the client's own claims:
    # never believed, and not parsed either, so their garbage is not an error.
    ip: str | None = None
    for hop in reversed(hops):
        ip = _hop_address(hop)
        if not trust.trusts(ip):
            return ip
    return ip  # every hop is one of ours (the leftmost is last): the client is a proxy itself


_VENDOR_KEYS = tuple((name, name.encode()) for name in VENDOR_IP_HEADERS)
_FORWARDED_FOR_KEY = FORWARDED_FOR.encode()
_CLIENT_HEADERS = frozenset([*(key for _, key in _VENDOR_KEYS), _FORWARDED_FOR_KEY])


def client_ip(peer: str | None, headers: Headers, trust: ProxyTrust) -> str | None:
    """The visitor's IP: the peer, unless it is a trusted proxy vouching for someone else."""
    peer_ip = canonical_ip(peer)
    if not trust.trusts(peer_ip):
        return peer_ip  # an untrusted peer's headers are not even parsed
    return _vouched_client(peer_ip, _collect(headers, _CLIENT_HEADERS), trust)


def _vouched_client(
    peer_ip: str | None, found: dict[bytes, list[bytes]], trust: ProxyTrust
) -> str | None:
    """The client a trusted peer names: a vendor header, else the X-Forwarded-For walk."""
    for name, key in _VENDOR_KEYS:
        values = found.get(key)
        if values:
            return _vendor_ip(name, values)
    values = found.get(_FORWARDED_FOR_KEY)
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
    return _region_from_pairs(headers, header_pairs(families, country_header, region_header))


PairKeys = tuple[tuple[bytes, bytes], ...]


def _keys(pairs: tuple[tuple[str, str], ...]) -> PairKeys:
    return tuple((c.encode("latin-1"), r.encode("latin-1")) for c, r in pairs)


def _names(keys: PairKeys) -> frozenset[bytes]:
    return frozenset(name for pair in keys for name in pair if name)


_AKAMAI_KEY = AKAMAI_EDGESCAPE.encode()


def _region_from_pairs(headers: Headers, pairs: tuple[tuple[str, str], ...]) -> Region | None:
    keys = _keys(pairs)
    return _region_from_found(_collect(headers, _names(keys)), keys)


def _region_from_found(found: dict[bytes, list[bytes]], keys: PairKeys) -> Region | None:
    for country_key, region_key in keys:
        lines = found.get(country_key)
        if not lines:
            continue
        raw = lines[0].decode("latin-1")
        region_lines = found.get(region_key) if region_key else None
        region_raw = region_lines[0].decode("latin-1") if region_lines else ""
        if country_key == _AKAMAI_KEY:
            raw, region_raw = _edgescape(raw)
        country = _country(raw)
        if country is None:
            continue  # "unknown" from this CDN: let the next source try
        return Region(country, _subdivision(region_raw, country) or None, "header")
    return None


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
def _geoip_region(country_code: str, registered_code: str, subdivision_code: str) -> Region:
    # A database holds a few thousand distinct answers at most: build each Region once.
    country = _country(country_code)
    if country is None:
        registered = _country(registered_code)
        return Region(registered, None, "geoip") if registered else UNKNOWN_REGION
    subdivision = _subdivision(subdivision_code, country) if subdivision_code else None
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
        addr = _parsed(ip)
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
        self._pair_keys = _keys(self._pairs)
        # Everything a trusted peer's request is read for, collected in one pass.
        self._trusted_names = _names(self._pair_keys) | _CLIENT_HEADERS
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
        found = _collect(headers, self._trusted_names)
        ip = _vouched_client(peer_ip, found, self.trust)
        region = _region_from_found(found, self._pair_keys)
        if region is not None:
            return ip, region
        return ip, (self._lookup(ip) if ip else UNKNOWN_REGION)

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
