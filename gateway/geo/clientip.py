"""Who the client is: IP address parsing and the forwarding headers of trusted proxies."""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable, Iterable

from starlette.datastructures import Headers

from gateway.core.errors import BadRequest, ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Vendor headers carrying the client address, in the order they are read, by the CDN family
# that sets them. Believed only from trusted proxies, and only for the families the operator
# names in GATEWAY_GEO_HEADERS: a proxy that is not that CDN passes a client's own value on.
VENDOR_IP_HEADERS: tuple[str, ...] = (
    "cf-connecting-ip",
    "true-client-ip",
    "cloudfront-viewer-address",
)
VENDOR_IP_FAMILIES: dict[str, str] = {
    "cf-connecting-ip": "cloudflare",
    "true-client-ip": "akamai",
    "cloudfront-viewer-address": "cloudfront",
}
FORWARDED_FOR = "x-forwarded-for"
MAX_ADDRESS_TEXT = 64  # longest IPv6 with zone id and port fits well within this
MAX_FORWARDED_FOR = 4096
MAX_HOPS = 64


def _parse_ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


# The longest address text worth caching: IPv6 with an embedded IPv4 is 45 characters, plus
# room for a zone id. Longer texts (garbage in a forwarded header) are parsed uncached, so the
# cache holds at most 65,536 short keys (a few MB) whatever a client sends.
_CACHED_TEXT_MAX = 64


def _address(text: str) -> tuple[IPAddress, str] | None:
    """The address and its canonical spelling, or None (cached for address-sized texts).

    ``::ffff:a.b.c.d`` → ``a.b.c.d``, ``2001:DB8::0:1`` → ``2001:db8::1``. Cached because the
    same peer text is checked for trust, canonicalised and looked up in one request.
    """
    if len(text) > _CACHED_TEXT_MAX:
        return _parse_address(text)
    return _cached_address(text)


def _parse_address(text: str) -> tuple[IPAddress, str] | None:
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


_cached_address = functools.lru_cache(maxsize=65536)(_parse_address)


def parsed_ip(text: str | None) -> IPAddress | None:
    """The address ``text`` spells (IPv4-mapped ones as IPv4), or None if it is not one."""
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
        ip = parsed_ip(text)
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


def collect_headers(headers: Headers, names: frozenset[bytes]) -> dict[bytes, list[bytes]]:
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


VendorKeys = tuple[tuple[str, bytes], ...]
_FORWARDED_FOR_KEY = FORWARDED_FOR.encode()


def vendor_keys(families: Iterable[str]) -> VendorKeys:
    """The vendor client-address headers of these CDN families, as (name, raw name)."""
    wanted = {f.strip().lower() for f in families}
    return tuple(
        (name, name.encode()) for name in VENDOR_IP_HEADERS if VENDOR_IP_FAMILIES[name] in wanted
    )


def client_header_keys(vendors: VendorKeys) -> frozenset[bytes]:
    """Raw (lower-case, bytes) names of every header that can name the client."""
    return frozenset([*(key for _, key in vendors), _FORWARDED_FOR_KEY])


def client_ip(
    peer: str | None, headers: Headers, trust: ProxyTrust, vendors: VendorKeys = ()
) -> str | None:
    """The visitor's IP: the peer, unless it is a trusted proxy vouching for someone else."""
    peer_ip = canonical_ip(peer)
    if not trust.trusts(peer_ip):
        return peer_ip  # an untrusted peer's headers are not even parsed
    found = collect_headers(headers, client_header_keys(vendors))
    return vouched_client(peer_ip, found, trust, vendors)


def vouched_client(
    peer_ip: str | None,
    found: dict[bytes, list[bytes]],
    trust: ProxyTrust,
    vendors: VendorKeys = (),
) -> str | None:
    """The client a trusted peer names: a listed vendor header, else the X-Forwarded-For walk."""
    for name, key in vendors:
        values = found.get(key)
        if values:
            return _vendor_ip(name, values)
    values = found.get(_FORWARDED_FOR_KEY)
    return _walk_forwarded_for(values, peer_ip, trust) if values else peer_ip
