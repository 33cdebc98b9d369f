"""Client IP through trusted proxies: ProxyTrust, client_ip and canonical_ip."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from gateway.core.errors import BadRequest, ConfigError
from gateway.geo import clientip
from gateway.geo.clientip import ProxyTrust, canonical_ip, client_ip

TRUSTED = ("127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8")
# The CDN families whose client-address headers these tables exercise.
VENDORS = clientip.vendor_keys(("cloudflare", "akamai", "cloudfront"))


def hdrs(*pairs: tuple[str, str]) -> Headers:
    """Headers as a server hands them over: lower-case names, repeated lines kept."""
    return Headers(raw=[(k.lower().encode(), v.encode("latin-1")) for k, v in pairs])


# --- ProxyTrust ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "trusted"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", False),  # a host entry is one address, not 127/8
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("::ffff:10.9.9.9", True),  # IPv4-mapped spelling of a trusted address
        ("::ffff:127.0.0.1", True),
        ("::1", True),
        ("0:0:0:0:0:0:0:1", True),  # another spelling of ::1
        ("fd12:3456::1", True),
        ("fe80::1", False),
        ("2001:db8::1", False),
        ("not-an-ip", False),
        ("", False),
        (None, False),
        ("1" * 200, False),
    ],
)
def test_proxy_trust(ip: str | None, trusted: bool) -> None:
    trust = ProxyTrust(TRUSTED)
    assert trust.trusts(ip) is trusted
    assert trust.trusts(ip) is trusted  # the cached verdict is the same


# Spellings from uvicorn's table: the same address written differently is the same proxy.
DUAL = (
    "2001:db8::",
    "2001:0db8:0001:0000:0000:0ab9:C0A8:0102",
    "2001:db8:3333:4444:5555:6666:1.2.3.4",
    "::11.22.33.44",
)


@pytest.mark.parametrize(
    ("ip", "trusted"),
    [
        ("2001:db8::", True),
        ("2001:db8:1::ab9:c0a8:102", True),
        ("2001:db8:3333:4444:5555:6666:102:304", True),
        ("::b16:212c", True),
        ("2001:db8:abcd:12::1", False),
        ("::", False),
        ("11.22.33.44", False),  # ::11.22.33.44 is IPv4-compatible, not IPv4-mapped
        ("a:b:c:d::", False),
    ],
)
def test_proxy_trust_ipv6_spellings(ip: str, trusted: bool) -> None:
    assert ProxyTrust(DUAL).trusts(ip) is trusted


def test_proxy_trust_mapped_network_trusts_plain_ipv4() -> None:
    trust = ProxyTrust(["::ffff:192.168.0.0/112"])
    assert trust.trusts("192.168.5.5")
    assert not trust.trusts("192.169.0.1")


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "localhost", "1.2.3.4.5"])
def test_proxy_trust_rejects_bad_entries(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        ProxyTrust(["127.0.0.1", bad])
    assert bad in err.value.message
    assert err.value.where == "GATEWAY_TRUSTED_PROXIES"


# --- client_ip -----------------------------------------------------------------------------

CLIENT_CASES = [
    # (peer, headers, expected client IP)
    ("203.0.113.7", [], "203.0.113.7"),
    ("::ffff:203.0.113.7", [], "203.0.113.7"),
    ("2001:DB8::0:1", [], "2001:db8::1"),
    (None, [], None),
    ("testclient", [], None),
    # Untrusted peers: forwarding and vendor headers are spoofable, never believed or parsed.
    ("203.0.113.7", [("X-Forwarded-For", "1.2.3.4")], "203.0.113.7"),
    ("203.0.113.7", [("CF-Connecting-IP", "1.2.3.4")], "203.0.113.7"),
    ("203.0.113.7", [("True-Client-IP", "1.2.3.4")], "203.0.113.7"),
    ("203.0.113.7", [("X-Forwarded-For", "garbage, ;;;")], "203.0.113.7"),
    ("203.0.113.7", [("CF-Connecting-IP", "x" * 5000)], "203.0.113.7"),
    # Trusted peer: X-Forwarded-For walked from the right to the first untrusted hop.
    ("127.0.0.1", [], "127.0.0.1"),
    ("127.0.0.1", [("X-Forwarded-For", "1.2.3.4")], "1.2.3.4"),
    ("127.0.0.1", [("X-Forwarded-For", "1.2.3.4, 10.0.0.1")], "1.2.3.4"),
    ("127.0.0.1", [("X-Forwarded-For", "6.6.6.6, 1.2.3.4, 10.0.0.1")], "1.2.3.4"),
    ("127.0.0.1", [("X-Forwarded-For", "10.0.0.2, 10.0.0.1")], "10.0.0.2"),  # all ours
    # Left of the first untrusted hop is the client's own claim: ignored, even if garbage.
    ("127.0.0.1", [("X-Forwarded-For", "garbage, 1.2.3.4, 10.0.0.1")], "1.2.3.4"),
    ("127.0.0.1", [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "1.2.3.4")], "1.2.3.4"),
    ("127.0.0.1", [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "10.0.0.5")], "1.2.3.4"),
    ("127.0.0.1", [("X-Forwarded-For", "1.2.3.4:5678")], "1.2.3.4"),
    ("127.0.0.1", [("X-Forwarded-For", "[2001:db8::7]:443")], "2001:db8::7"),
    ("127.0.0.1", [("X-Forwarded-For", "[2001:db8::7]")], "2001:db8::7"),
    ("127.0.0.1", [("X-Forwarded-For", "2001:db8::7, fd00::1")], "2001:db8::7"),
    ("127.0.0.1", [("X-Forwarded-For", "::ffff:1.2.3.4")], "1.2.3.4"),
    ("127.0.0.1", [("X-Forwarded-For", "1.2.3.4, ::ffff:10.0.0.3")], "1.2.3.4"),
    ("127.0.0.1", [("X-Forwarded-For", "")], "127.0.0.1"),
    ("127.0.0.1", [("X-Forwarded-For", "1.2.3.4, unknown")], None),
    ("::1", [("X-Forwarded-For", "1.2.3.4")], "1.2.3.4"),
    ("::ffff:127.0.0.1", [("X-Forwarded-For", "1.2.3.4")], "1.2.3.4"),
    # Vendor headers win over X-Forwarded-For, in a fixed order.
    ("127.0.0.1", [("CF-Connecting-IP", "5.6.7.8"), ("X-Forwarded-For", "1.2.3.4")], "5.6.7.8"),
    ("127.0.0.1", [("True-Client-IP", "5.6.7.8"), ("CF-Connecting-IP", "9.9.9.9")], "9.9.9.9"),
    ("127.0.0.1", [("True-Client-IP", "2001:db8::5")], "2001:db8::5"),
    ("127.0.0.1", [("CloudFront-Viewer-Address", "198.51.100.10:46532")], "198.51.100.10"),
    (
        "127.0.0.1",
        [("CloudFront-Viewer-Address", "2001:db8:85a3::8a2e:370:7334:46532")],
        "2001:db8:85a3::8a2e:370:7334",
    ),
]


@pytest.mark.parametrize(("peer", "headers", "expected"), CLIENT_CASES)
def test_client_ip(peer: str | None, headers: list[tuple[str, str]], expected: str | None) -> None:
    assert client_ip(peer, hdrs(*headers), ProxyTrust(TRUSTED), VENDORS) == expected


BAD_CASES = [
    # (header lines from a trusted peer, the header named in the error)
    ([("X-Forwarded-For", "1.2.3.4, not-an-ip")], "X-Forwarded-For"),
    ([("X-Forwarded-For", "1.2.3.4:port")], "X-Forwarded-For"),
    ([("X-Forwarded-For", "[2001:db8::1")], "X-Forwarded-For"),
    ([("X-Forwarded-For", "[2001:db8::1]x")], "X-Forwarded-For"),
    ([("X-Forwarded-For", ", ".join(["10.0.0.1"] * 65))], "X-Forwarded-For"),
    ([("X-Forwarded-For", "1" * 5000)], "X-Forwarded-For"),
    ([("CF-Connecting-IP", "nope")], "cf-connecting-ip"),
    ([("CF-Connecting-IP", "1.2.3.4"), ("CF-Connecting-IP", "5.6.7.8")], "cf-connecting-ip"),
    ([("True-Client-IP", "1" * 100)], "true-client-ip"),
    ([("CloudFront-Viewer-Address", "198.51.100.10")], "cloudfront-viewer-address"),
    ([("CloudFront-Viewer-Address", "198.51.100.10:99999")], "cloudfront-viewer-address"),
    ([("CloudFront-Viewer-Address", "[2001:db8::1]:443")], "cloudfront-viewer-address"),
]


@pytest.mark.parametrize(("headers", "field"), BAD_CASES)
def test_client_ip_rejects_garbage_from_trusted_peer(
    headers: list[tuple[str, str]], field: str
) -> None:
    with pytest.raises(BadRequest) as err:
        client_ip("10.0.0.1", hdrs(*headers), ProxyTrust(TRUSTED), VENDORS)
    assert err.value.code == "invalid_header"
    assert err.value.status_code == 400
    assert err.value.field == field
    assert err.value.detail.startswith(f"{field}: ")
    # The same lines from an untrusted peer are ignored, not an error.
    assert client_ip("203.0.113.9", hdrs(*headers), ProxyTrust(TRUSTED), VENDORS) == "203.0.113.9"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("::FFFF:1.2.3.4", "1.2.3.4"),
        ("2001:0DB8::1", "2001:db8::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  # one zero group stays
        ("::1.2.3.4", "::102:304"),  # spelt as ipaddress does, not as glibc
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("01.2.3.4", None),
        ("1.2.3.4 ", None),
        ("1.2.3", None),
        ("x", None),
        ("", None),
        (None, None),
    ],
)
def test_canonical_ip(text: str | None, expected: str | None) -> None:
    assert canonical_ip(text) == expected


# --- properties ----------------------------------------------------------------------------

PUBLIC_V4 = st.integers(min_value=0x01000000, max_value=0x09FFFFFF).map(
    lambda n: str(ipaddress.IPv4Address(n))
)
PROXIES = st.integers(min_value=0, max_value=0xFFFFFF).map(
    lambda n: str(ipaddress.IPv4Address(0x0A000000 + n))
)


@given(peer=PUBLIC_V4, xff=st.binary(max_size=200), cf=st.binary(max_size=80))
@settings(max_examples=200, deadline=None)
def test_untrusted_peer_is_the_client_whatever_it_sends(peer: str, xff: bytes, cf: bytes) -> None:
    headers = Headers(raw=[(b"x-forwarded-for", xff), (b"cf-connecting-ip", cf)])
    assert client_ip(peer, headers, ProxyTrust(TRUSTED), VENDORS) == peer


@given(
    claimed=st.lists(PUBLIC_V4 | PROXIES, max_size=5),
    client=PUBLIC_V4,
    chain=st.lists(PROXIES, max_size=5),
)
@settings(max_examples=200, deadline=None)
def test_forwarded_for_answer_is_the_hop_before_our_proxies(
    claimed: list[str], client: str, chain: list[str]
) -> None:
    # Whatever the client claims (left), our proxies append the client and then each other.
    xff = ", ".join([*claimed, client, *chain])
    assert (
        client_ip("127.0.0.1", hdrs(("X-Forwarded-For", xff)), ProxyTrust(TRUSTED), VENDORS)
        == client
    )


HEADER_NAMES = st.sampled_from([*clientip.VENDOR_IP_HEADERS, "x-forwarded-for"])


@given(name=HEADER_NAMES, value=st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_trusted_peer_garbage_is_a_bad_request_or_an_address(name: str, value: bytes) -> None:
    outcome: str | BadRequest | None
    try:
        outcome = client_ip(
            "127.0.0.1", Headers(raw=[(name.encode(), value)]), ProxyTrust(TRUSTED), VENDORS
        )
    except BadRequest as err:  # the only exception a request can provoke here
        outcome = err
    if isinstance(outcome, BadRequest):
        assert outcome.code == "invalid_header"
        assert outcome.field.lower() == name
    else:
        assert outcome is None or canonical_ip(outcome) == outcome


def test_cdn_client_headers_from_an_unlisted_family_are_not_believed() -> None:
    """Spoofing threat: a trusted proxy that is not Cloudflare passes a client's own
    CF-Connecting-IP through; only the families the operator lists are read."""
    headers = hdrs(
        ("CF-Connecting-IP", "81.2.69.160"),
        ("True-Client-IP", "81.2.69.161"),
        ("X-Forwarded-For", "198.51.100.7"),
    )
    assert client_ip("127.0.0.1", headers, ProxyTrust(TRUSTED)) == "198.51.100.7"
    akamai = clientip.vendor_keys(["akamai"])
    assert client_ip("127.0.0.1", headers, ProxyTrust(TRUSTED), akamai) == "81.2.69.161"


def test_default_settings_trust_no_proxy_and_no_cdn_header() -> None:
    from gateway.core.settings import load_settings

    settings = load_settings(env={})
    assert settings.trusted_proxies == () and settings.geo_headers == ()
    headers = hdrs(("CF-Connecting-IP", "81.2.69.160"), ("X-Forwarded-For", "81.2.69.160"))
    trust = ProxyTrust(settings.trusted_proxies)
    vendors = clientip.vendor_keys(settings.geo_headers)
    assert client_ip("127.0.0.1", headers, trust, vendors) == "127.0.0.1"


def test_long_address_texts_are_never_cached() -> None:
    """Memory threat: a client behind a trusted proxy sends kilobytes of garbage per forwarded
    header; the address cache keeps only address-sized texts, so 65,536 of its entries stay a
    few MB however long the texts a client sends."""
    before = clientip._cached_address.cache_info().currsize
    for n in range(200):
        assert clientip.parsed_ip(f"{n}" + "x" * 4000) is None
    assert clientip._cached_address.cache_info().currsize == before
    assert clientip.parsed_ip("2001:DB8::0:1") == ipaddress.ip_address("2001:db8::1")
    assert clientip._cached_address.cache_info().currsize <= before + 1
