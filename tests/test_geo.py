"""The GeoIP database and the Locator (trusted CDN header, else GeoIP, else unknown)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.errors import BadRequest, ConfigError, GeoDatabaseError
from gateway.core.model import UNKNOWN_REGION, Region
from gateway.geo import locator as geo
from gateway.geo.locator import GeoDatabase, Locator
from tests.geodb import city, write_mmdb
from tests.helpers import GEOIP_DIR, make_settings
from tests.test_clientip import hdrs

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
    dbs = {name: GeoDatabase(GEOIP_DIR / f"{name}.mmdb") for name in {c[0] for c in DB_CASES}}
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
    path = GEOIP_DIR / f"{name}.mmdb"
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
        GeoDatabase(GEOIP_DIR / f"{name}.mmdb")


def test_sampled_validation_of_a_good_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geo, "FULL_WALK_MAX_NODES", 0)
    db = GeoDatabase(GEOIP_DIR / "GeoIP2-City-Test.mmdb")
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
    db = GeoDatabase(GEOIP_DIR / "GeoIP2-City-Test-Broken-Double-Format.mmdb")
    with caplog.at_level(logging.ERROR, logger="gateway.geo.locator"):
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
    shutil.copy(GEOIP_DIR / "GeoIP2-Country-Test.mmdb", built)
    locator = Locator(settings)
    locator.load()
    assert locator.locate("81.2.69.160", hdrs()) == ("81.2.69.160", Region("GB", None, "geoip"))
    locator.close()


def test_locator_refuses_a_corrupt_database_at_load(tmp_path: Path) -> None:
    path = GEOIP_DIR / "GeoIP2-City-Test-Broken-Double-Format.mmdb"
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


@given(text=st.text(max_size=60) | st.ip_addresses().map(str))
@settings(max_examples=300, deadline=None)
def test_lookup_never_fails(shared_dbs: dict[str, GeoDatabase], text: str) -> None:
    found = shared_dbs["GeoIP2-City-Test"].lookup(text)
    assert found == UNKNOWN_REGION or (found.source == "geoip" and found.country is not None)
