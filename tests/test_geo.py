"""Client IP through trusted proxies, CDN geo headers, the GeoIP database and the Locator."""

from __future__ import annotations

import ipaddress
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from gateway import geo
from gateway.errors import BadRequest, ConfigError, GeoDatabaseError
from gateway.geo import (
    GeoDatabase,
    Locator,
    ProxyTrust,
    canonical_ip,
    client_ip,
    header_pairs,
    region_from_headers,
)
from gateway.model import UNKNOWN_REGION, Region
from tests.conftest import SHARED_GEOIP, make_settings
from tests.geodb import city, write_mmdb

TRUSTED = ("127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8")
ALL_FAMILIES = ("cloudflare", "cloudfront", "vercel", "akamai")


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
    assert client_ip(peer, hdrs(*headers), ProxyTrust(TRUSTED)) == expected


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
        client_ip("10.0.0.1", hdrs(*headers), ProxyTrust(TRUSTED))
    assert err.value.code == "invalid_header"
    assert err.value.status_code == 400
    assert err.value.field == field
    assert err.value.detail.startswith(f"{field}: ")
    # The same lines from an untrusted peer are ignored, not an error.
    assert client_ip("203.0.113.9", hdrs(*headers), ProxyTrust(TRUSTED)) == "203.0.113.9"


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


# --- region_from_headers -------------------------------------------------------------------

REGION_CASES = [
    ([("CF-IPCountry", "de")], Region("DE", None, "header")),
    ([("CF-IPCountry", "US"), ("cf-region-code", "CA")], Region("US", "CA", "header")),
    ([("CF-IPCountry", "US"), ("cf-region-code", "us-ca")], Region("US", "CA", "header")),
    ([("CF-IPCountry", "US"), ("cf-region-code", "MX-CA")], Region("US", None, "header")),
    ([("CF-IPCountry", "US"), ("cf-region-code", "Cal!fornia")], Region("US", None, "header")),
    ([("CF-IPCountry", "XX")], None),
    ([("CF-IPCountry", "T1")], None),
    ([("CF-IPCountry", "**")], None),
    ([("CF-IPCountry", "")], None),
    ([("CF-IPCountry", "DEU")], None),
    ([("CF-IPCountry", "é1")], None),
    (
        [("CloudFront-Viewer-Country", "US"), ("CloudFront-Viewer-Country-Region", "WA")],
        Region("US", "WA", "header"),
    ),
    (
        [("x-vercel-ip-country", "BR"), ("x-vercel-ip-country-region", "SP")],
        Region("BR", "SP", "header"),
    ),
    (
        [("X-Akamai-Edgescape", "georegion=246,country_code=CA,region_code=QC,city=MONTREAL")],
        Region("CA", "QC", "header"),
    ),
    ([("X-Akamai-Edgescape", "georegion=0,city=NOWHERE")], None),
    # An unknown answer from one CDN lets the next family answer.
    ([("CF-IPCountry", "XX"), ("x-vercel-ip-country", "FR")], Region("FR", None, "header")),
    # A subdivision is read from the same family as the country only.
    ([("CF-IPCountry", "US"), ("x-vercel-ip-country-region", "CA")], Region("US", None, "header")),
    ([], None),
]


@pytest.mark.parametrize(("headers", "expected"), REGION_CASES)
def test_region_from_headers(headers: list[tuple[str, str]], expected: Region | None) -> None:
    assert region_from_headers(hdrs(*headers), ALL_FAMILIES, "", "") == expected


def test_region_from_headers_reads_only_configured_families() -> None:
    headers = hdrs(("CF-IPCountry", "DE"), ("x-vercel-ip-country", "BR"))
    assert region_from_headers(headers, ("vercel",), "", "") == Region("BR", None, "header")
    assert region_from_headers(headers, (), "", "") is None


def test_region_from_headers_custom_pair_comes_first() -> None:
    headers = hdrs(("CF-IPCountry", "DE"), ("X-Geo-Country", "jp"), ("X-Geo-Sub", "JP-13"))
    found = region_from_headers(headers, ("cloudflare",), "X-Geo-Country", "X-Geo-Sub")
    assert found == Region("JP", "13", "header")


@pytest.mark.parametrize(
    ("families", "country_header", "message"),
    [
        (("cloudflare", "bunny"), "", "unknown geo header family 'bunny'"),
        (("fastly",), "", "needs GATEWAY_GEO_COUNTRY_HEADER"),
        (("custom",), "", "needs GATEWAY_GEO_COUNTRY_HEADER"),
    ],
)
def test_header_pairs_config_errors(
    families: tuple[str, ...], country_header: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        header_pairs(families, country_header, "")
    assert message in err.value.message
    assert err.value.where == "GATEWAY_GEO_HEADERS"


def test_header_pairs_fastly_uses_the_configured_names() -> None:
    pairs = header_pairs(("fastly", "cloudflare"), "Fastly-Geo-Country", "Fastly-Geo-Region")
    assert pairs == (
        ("fastly-geo-country", "fastly-geo-region"),
        ("cf-ipcountry", "cf-region-code"),
    )


# --- GeoDatabase against MaxMind's test databases ------------------------------------------

DB_CASES = [
    ("GeoIP2-City-Test", "81.2.69.160", Region("GB", "ENG", "geoip")),
    ("GeoIP2-City-Test", "2.125.160.216", Region("GB", "ENG", "geoip")),  # first = largest
    ("GeoIP2-City-Test", "216.160.83.56", Region("US", "WA", "geoip")),
    ("GeoIP2-City-Test", "214.78.120.1", Region("US", "CA", "geoip")),
    ("GeoIP2-City-Test", "2001:480:10::1", Region("US", "CA", "geoip")),
    ("GeoIP2-City-Test", "89.160.20.112", Region("SE", "E", "geoip")),
    ("GeoIP2-City-Test", "2a02:d180::1", Region("DE", None, "geoip")),
    ("GeoIP2-City-Test", "175.16.199.1", Region("CN", "22", "geoip")),
    ("GeoIP2-City-Test", "202.196.224.1", Region("PH", None, "geoip")),
    ("GeoIP2-City-Test", "::ffff:81.2.69.160", Region("GB", "ENG", "geoip")),
    ("GeoIP2-City-Test", "214.1.1.1", UNKNOWN_REGION),  # found, but no country at all
    ("GeoIP2-City-Test", "1.1.1.1", UNKNOWN_REGION),
    ("GeoIP2-City-Test", "127.0.0.1", UNKNOWN_REGION),
    ("GeoIP2-City-Test", "10.1.2.3", UNKNOWN_REGION),
    ("GeoIP2-City-Test", "not an ip", UNKNOWN_REGION),
    ("GeoIP2-Country-Test", "81.2.69.160", Region("GB", None, "geoip")),
    ("GeoIP2-Country-Test", "2001:480:10::1", Region("US", None, "geoip")),
    ("GeoIP2-Country-Test", "2a02:cfc0::1", Region("FR", None, "geoip")),
    ("GeoIP2-Country-Test", "214.1.1.1", UNKNOWN_REGION),
    ("GeoLite2-City-Test", "2.125.160.216", Region("GB", "ENG", "geoip")),
    ("GeoLite2-City-Test", "214.78.120.1", UNKNOWN_REGION),  # GeoIP2 City only
    ("GeoLite2-Country-Test", "2001:250::1", Region("CN", None, "geoip")),
    ("GeoLite2-Country-Test", "89.160.20.112", Region("SE", None, "geoip")),
]


@pytest.fixture(scope="module")
def shared_dbs() -> Iterator[dict[str, GeoDatabase]]:
    dbs = {name: GeoDatabase(SHARED_GEOIP / f"{name}.mmdb") for name in {c[0] for c in DB_CASES}}
    yield dbs
    for db in dbs.values():
        db.close()


@pytest.mark.parametrize(("name", "ip", "expected"), DB_CASES)
def test_lookup_in_maxmind_test_databases(
    shared_dbs: dict[str, GeoDatabase], name: str, ip: str, expected: Region
) -> None:
    assert shared_dbs[name].lookup(ip) == expected


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("GeoIP2-City-Test", "GeoIP2-City"),
        ("GeoIP2-Country-Test", "GeoIP2-Country"),
        ("GeoLite2-City-Test", "GeoLite2-City"),
        ("GeoLite2-Country-Test", "GeoLite2-Country"),
    ],
)
def test_database_info(shared_dbs: dict[str, GeoDatabase], name: str, kind: str) -> None:
    info = shared_dbs[name].info()
    assert info["type"] == kind
    assert info["path"].endswith(f"{name}.mmdb")
    assert info["node_count"] > 1000
    assert len(info["build_date"]) == 10
    assert info["validation"] == "full"


CORRUPT = ["GeoIP2-City-Test-Broken-Double-Format", "GeoIP2-City-Test-Invalid-Node-Count"]


@pytest.mark.parametrize("name", CORRUPT)
def test_corrupt_databases_are_refused(name: str) -> None:
    path = SHARED_GEOIP / f"{name}.mmdb"
    with pytest.raises(GeoDatabaseError) as err:
        GeoDatabase(path)
    assert str(path) in err.value.message
    assert "geo build" in err.value.hint


@pytest.mark.parametrize("name", CORRUPT)
def test_corrupt_databases_are_refused_when_sampled(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sampling used for big databases must catch them too.
    monkeypatch.setattr(geo, "FULL_WALK_MAX_NODES", 0)
    with pytest.raises(GeoDatabaseError):
        GeoDatabase(SHARED_GEOIP / f"{name}.mmdb")


def test_sampled_validation_of_a_good_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geo, "FULL_WALK_MAX_NODES", 0)
    db = GeoDatabase(SHARED_GEOIP / "GeoIP2-City-Test.mmdb")
    assert db.validation == "sampled"
    assert db.lookup("81.2.69.160") == Region("GB", "ENG", "geoip")
    db.close()


def test_corruption_at_lookup_time_is_unknown_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Switch the open-time check off to reach a corrupt record at lookup time.
    monkeypatch.setattr(geo, "FULL_WALK_MAX_NODES", 0)
    monkeypatch.setattr(geo, "SAMPLE_WALK_NETWORKS", 0)
    monkeypatch.setattr(geo, "SAMPLE_LOOKUPS", 0)
    db = GeoDatabase(SHARED_GEOIP / "GeoIP2-City-Test-Broken-Double-Format.mmdb")
    with caplog.at_level(logging.ERROR, logger="gateway.geo"):
        assert db.lookup("81.2.69.160") == UNKNOWN_REGION
    assert any("geoip lookup failed" in r.getMessage() for r in caplog.records)
    db.close()


def test_missing_and_non_mmdb_files(tmp_path: Path) -> None:
    with pytest.raises(GeoDatabaseError) as err:
        GeoDatabase(tmp_path / "nope.mmdb")
    assert "not found" in err.value.message
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"this is not a MaxMind database" * 100)
    with pytest.raises(GeoDatabaseError) as err:
        GeoDatabase(junk)
    assert str(junk) in err.value.message


def test_unsupported_database_type(tmp_path: Path) -> None:
    path = write_mmdb(
        tmp_path / "asn.mmdb",
        {"1.0.0.0/24": {"autonomous_system_number": 1}},
        database_type="GeoLite2-ASN",
    )
    with pytest.raises(GeoDatabaseError) as err:
        GeoDatabase(path)
    assert "GeoLite2-ASN" in err.value.message
    assert str(path) in err.value.message
    assert "City, Country or Enterprise" in err.value.hint


def test_enterprise_database_is_city_shaped(tmp_path: Path) -> None:
    path = write_mmdb(
        tmp_path / "ent.mmdb", {"8.8.8.0/24": city("US", "CA")}, database_type="GeoIP2-Enterprise"
    )
    db = GeoDatabase(path)
    assert db.lookup("8.8.8.8") == Region("US", "CA", "geoip")
    db.close()


# --- databases the tests write -------------------------------------------------------------

OWN_NETWORKS = {
    "200.160.0.0/20": city("BR", "SP"),
    "2804:14c::/32": city("BR"),
    "8.8.0.0/16": city("US", "CA", "LA"),
    "9.9.9.0/24": city(None, registered="CH"),
    "11.0.0.0/8": city("us", "ca"),
    "12.0.0.0/8": city("DE", "toolong!"),
    "13.0.0.0/8": city("XX"),
}
OWN_CASES = [
    ("200.160.2.3", Region("BR", "SP", "geoip")),
    ("2804:14c:1::1", Region("BR", None, "geoip")),
    ("8.8.8.8", Region("US", "CA", "geoip")),
    ("::ffff:8.8.8.8", Region("US", "CA", "geoip")),
    ("9.9.9.9", Region("CH", None, "geoip")),  # registered country as a fallback
    ("11.1.1.1", Region("US", "CA", "geoip")),  # upper-cased
    ("12.1.1.1", Region("DE", None, "geoip")),  # malformed subdivision dropped
    ("13.1.1.1", UNKNOWN_REGION),
    ("14.1.1.1", UNKNOWN_REGION),
]


@pytest.mark.parametrize(("ip", "expected"), OWN_CASES)
def test_lookup_in_written_database(tmp_path: Path, ip: str, expected: Region) -> None:
    db = GeoDatabase(write_mmdb(tmp_path / "own.mmdb", OWN_NETWORKS))
    assert db.lookup(ip) == expected
    db.close()


# --- Locator -------------------------------------------------------------------------------


@pytest.fixture
def own_db(tmp_path: Path) -> Path:
    return write_mmdb(tmp_path / "own.mmdb", OWN_NETWORKS)


LOCATE_CASES = [
    # (peer, headers, expected ip, expected region)
    ("200.160.2.3", [], "200.160.2.3", Region("BR", "SP", "geoip")),
    # Spoofed from an untrusted peer: XFF, CF-Connecting-IP and CF-IPCountry are all ignored.
    (
        "200.160.2.3",
        [("X-Forwarded-For", "8.8.8.8"), ("CF-Connecting-IP", "8.8.8.8"), ("CF-IPCountry", "US")],
        "200.160.2.3",
        Region("BR", "SP", "geoip"),
    ),
    ("127.0.0.1", [("X-Forwarded-For", "8.8.4.4")], "8.8.4.4", Region("US", "CA", "geoip")),
    (
        "127.0.0.1",
        [("CF-Connecting-IP", "8.8.4.4"), ("CF-IPCountry", "FR")],
        "8.8.4.4",
        Region("FR", None, "header"),
    ),
    (
        "127.0.0.1",
        [("CF-Connecting-IP", "200.160.1.1"), ("CF-IPCountry", "XX")],
        "200.160.1.1",
        Region("BR", "SP", "geoip"),
    ),
    ("127.0.0.1", [], "127.0.0.1", UNKNOWN_REGION),
    ("127.0.0.1", [("X-Forwarded-For", "unknown")], None, UNKNOWN_REGION),
    (None, [("CF-IPCountry", "DE")], None, UNKNOWN_REGION),
]


@pytest.mark.parametrize(("peer", "headers", "ip", "region"), LOCATE_CASES)
def test_locate(
    tmp_path: Path,
    own_db: Path,
    peer: str | None,
    headers: list[tuple[str, str]],
    ip: str | None,
    region: Region,
) -> None:
    locator = Locator(make_settings(tmp_path, geoip_db=str(own_db)))
    locator.load()
    assert locator.locate(peer, hdrs(*headers)) == (ip, region)
    locator.close()


def test_locator_caches_lookups(tmp_path: Path, own_db: Path) -> None:
    locator = Locator(make_settings(tmp_path, geoip_db=str(own_db), geo_cache_size=2))
    locator.load()
    for _ in range(3):
        assert locator.locate("8.8.8.8", hdrs())[1] == Region("US", "CA", "geoip")
    assert locator.cache_info() == {"hits": 2, "misses": 1, "size": 1, "max_size": 2}
    locator.locate("200.160.0.1", hdrs())
    locator.locate("200.160.0.2", hdrs())
    assert locator.cache_info()["size"] == 2  # bounded
    info = locator.database_info()
    assert info["loaded"] is True
    assert info["type"] == "Test-GeoIP2-City"
    assert info["path"] == str(own_db)
    locator.close()
    assert locator.database_info() == {"loaded": False}
    assert locator.locate("8.8.8.8", hdrs()) == ("8.8.8.8", UNKNOWN_REGION)


def test_locator_without_database(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert settings.geoip_path is None
    locator = Locator(settings)
    locator.load()
    assert locator.locate("8.8.8.8", hdrs()) == ("8.8.8.8", UNKNOWN_REGION)
    assert locator.locate("127.0.0.1", hdrs(("CF-IPCountry", "de"))) == (
        "127.0.0.1",
        Region("DE", None, "header"),
    )
    assert locator.database_info() == {"loaded": False}
    assert locator.cache_info()["hits"] == 0


def test_locator_finds_the_built_database_in_the_data_dir(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    built = settings.data_dir / "geo" / "country.mmdb"
    built.parent.mkdir(parents=True)
    shutil.copy(SHARED_GEOIP / "GeoIP2-Country-Test.mmdb", built)
    locator = Locator(settings)
    locator.load()
    assert locator.locate("81.2.69.160", hdrs()) == ("81.2.69.160", Region("GB", None, "geoip"))
    locator.close()


def test_locator_refuses_a_corrupt_database_at_load(tmp_path: Path) -> None:
    path = SHARED_GEOIP / "GeoIP2-City-Test-Broken-Double-Format.mmdb"
    locator = Locator(make_settings(tmp_path, geoip_db=str(path)))
    with pytest.raises(GeoDatabaseError):
        locator.load()
    assert locator.database_info() == {"loaded": False}


def test_locator_geo_header_names(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, geo_headers=("cloudflare", "akamai"), geo_country_header="X-Geo-Country"
    )
    assert Locator(settings).geo_header_names == (
        "x-geo-country",
        "cf-ipcountry",
        "cf-region-code",
        "x-akamai-edgescape",
    )


def test_locator_rejects_unknown_header_family(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Locator(make_settings(tmp_path, geo_headers=("cloudflare", "nginx")))


def test_locator_bad_header_from_trusted_peer(tmp_path: Path) -> None:
    locator = Locator(make_settings(tmp_path))
    with pytest.raises(BadRequest) as err:
        locator.locate("127.0.0.1", hdrs(("X-Forwarded-For", "evil")))
    assert err.value.field == "X-Forwarded-For"


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
    assert client_ip(peer, headers, ProxyTrust(TRUSTED)) == peer


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
    assert client_ip("127.0.0.1", hdrs(("X-Forwarded-For", xff)), ProxyTrust(TRUSTED)) == client


HEADER_NAMES = st.sampled_from([*geo.VENDOR_IP_HEADERS, "x-forwarded-for"])


@given(name=HEADER_NAMES, value=st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_trusted_peer_garbage_is_a_bad_request_or_an_address(name: str, value: bytes) -> None:
    outcome: str | BadRequest | None
    try:
        outcome = client_ip("127.0.0.1", Headers(raw=[(name.encode(), value)]), ProxyTrust(TRUSTED))
    except BadRequest as err:  # the only exception a request can provoke here
        outcome = err
    if isinstance(outcome, BadRequest):
        assert outcome.code == "invalid_header"
        assert outcome.field.lower() == name
    else:
        assert outcome is None or canonical_ip(outcome) == outcome


@given(
    country=st.binary(max_size=20),
    region=st.binary(max_size=20),
    family=st.sampled_from(["cloudflare", "cloudfront", "vercel"]),
)
@settings(max_examples=300, deadline=None)
def test_geo_headers_never_fail_and_only_yield_codes(
    country: bytes, region: bytes, family: str
) -> None:
    country_name, region_name = geo.GEO_HEADER_FAMILIES[family]
    headers = Headers(raw=[(country_name.encode(), country), (region_name.encode(), region)])
    found = region_from_headers(headers, (family,), "", "")
    if found is not None:
        assert found.country is not None
        assert len(found.country) == 2
        assert found.country.isascii()
        assert found.country.isupper()
        assert found.subdivision is None or (
            found.subdivision.isascii() and found.subdivision.isalnum()
        )
        assert found.source == "header"


@given(text=st.text(max_size=60) | st.ip_addresses().map(str))
@settings(max_examples=300, deadline=None)
def test_lookup_never_fails(shared_dbs: dict[str, GeoDatabase], text: str) -> None:
    found = shared_dbs["GeoIP2-City-Test"].lookup(text)
    assert found == UNKNOWN_REGION or (found.source == "geoip" and found.country is not None)
