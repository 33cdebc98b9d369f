"""The embedded country database: tor-format ranges in, a MaxMind DB that geoip2 reads out."""

from __future__ import annotations

import ipaddress
import tempfile
import time
from pathlib import Path

import geoip2.database
import geoip2.errors
import maxminddb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.errors import ConfigError
from gateway.core.model import UNKNOWN_REGION, Region
from gateway.geo.build import (
    ATTRIBUTION,
    DATABASE_TYPE,
    DEFAULT_SOURCE,
    build_country_mmdb,
    default_output,
    read_ranges,
    run_build,
)
from gateway.geo.locator import GeoDatabase
from tests.helpers import make_settings


def v4(address: str) -> int:
    return int(ipaddress.IPv4Address(address))


GEOIP_V4 = f"""\
# This file has been converted from the IPFire Location database
# License:   CC BY-SA 4.0

{v4("1.0.0.0")},{v4("1.0.0.255")},AU
{v4("1.0.1.0")},{v4("1.0.3.255")},CN
{v4("2.0.0.0")},{v4("2.0.0.127")},FR
{v4("2.0.0.128")},{v4("2.0.1.9")},FR
{v4("5.0.0.0")},{v4("5.0.0.255")},??
{v4("5.0.1.0")},{v4("5.0.1.255")},EU
{v4("5.0.2.0")},{v4("5.0.2.255")},UK
{v4("5.0.3.0")},{v4("5.0.3.255")},A1
{v4("5.0.4.0")},{v4("5.0.4.255")},AP
{v4("200.160.0.0")},{v4("200.160.15.255")},BR
{v4("255.255.255.255")},{v4("255.255.255.255")},US
"""

GEOIP_V6 = """\
# IPv6 ranges
2001:2::,2001:2:0:ffff:ffff:ffff:ffff:ffff,JP
2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,??
2a00:1450::,2a00:1450:ffff:ffff:ffff:ffff:ffff:ffff,IE
2804:14c::,2804:14d:ffff:ffff:ffff:ffff:ffff:ffff,BR
::ffff:9.0.0.0,::ffff:9.0.0.255,US
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "tor"
    src.mkdir()
    (src / "geoip").write_text(GEOIP_V4)
    (src / "geoip6").write_text(GEOIP_V6)
    return src


LOOKUPS = [
    ("1.0.0.1", "AU"),
    ("1.0.2.200", "CN"),
    ("2.0.0.5", "FR"),
    ("2.0.1.9", "FR"),
    ("2.0.1.10", None),  # just past the merged range
    ("5.0.2.1", "GB"),  # UK renamed
    ("200.160.2.3", "BR"),
    ("255.255.255.255", "US"),
    ("::ffff:200.160.2.3", "BR"),  # IPv4-mapped spelling reaches the IPv4 data
    ("2001:2::1", "JP"),
    ("2a00:1450:4001::1", "IE"),
    ("2804:14d:ffff::1", "BR"),
]


def test_build_and_read_with_geoip2(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "country.mmdb"
    stats = build_country_mmdb(source / "geoip", source / "geoip6", out)
    assert stats.output == out
    # FR ranges merged; ??, A1 and AP dropped; EU kept as continent only.
    assert stats.ranges_v4 == 7  # AU CN FR(merged) EU GB BR US
    assert stats.ranges_v6 == 3
    assert stats.skipped == 5  # 3 placeholder v4 ranges, 1 v6 "??", 1 v6 range in IPv4 space
    assert stats.countries == 8  # AU CN FR GB BR US JP IE; EU is not a country
    assert stats.size_bytes == out.stat().st_size > 0
    assert stats.node_count > 0
    assert stats.networks >= stats.ranges_v4 + stats.ranges_v6
    assert stats.seconds < 5
    assert [p.name for p in out.parent.iterdir()] == ["country.mmdb"]  # no temp file left
    assert out.stat().st_mode & 0o777 == 0o644  # readable by the server's user
    assert str(stats).startswith(f"wrote {out}: 7 IPv4 + 3 IPv6 ranges (5 skipped), 8 countries")

    with geoip2.database.Reader(str(out)) as reader:
        meta = reader.metadata()
        assert meta.database_type == DATABASE_TYPE
        assert "Country" in meta.database_type
        assert meta.description == {"en": ATTRIBUTION}
        assert meta.ip_version == 6
        for ip, expected in LOOKUPS:
            if expected is None:
                with pytest.raises(geoip2.errors.AddressNotFoundError):
                    reader.country(ip)
            else:
                assert reader.country(ip).country.iso_code == expected, ip
        eu = reader.country("5.0.1.7")
        assert eu.country.iso_code is None
        assert eu.continent.code == "EU"
        for dropped in ("5.0.0.1", "5.0.3.1", "5.0.4.1", "2001:db8::1", "9.0.0.1"):
            with pytest.raises(geoip2.errors.AddressNotFoundError):
                reader.country(dropped)


def test_built_database_serves_the_gateway(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "country.mmdb"
    build_country_mmdb(source / "geoip", source / "geoip6", out)
    db = GeoDatabase(out)
    assert db.validation == "full"
    assert db.lookup("200.160.2.3") == Region("BR", None, "geoip")
    assert db.lookup("5.0.2.9") == Region("GB", None, "geoip")
    assert db.lookup("5.0.1.7") == UNKNOWN_REGION  # EU: country unknown, fails closed
    assert db.lookup("2a00:1450::1") == Region("IE", None, "geoip")
    assert db.info()["description"] == ATTRIBUTION
    db.close()


@pytest.mark.parametrize("family", ["geoip", "geoip6"])
def test_build_from_one_family(source: Path, tmp_path: Path, family: str) -> None:
    out = tmp_path / "one.mmdb"
    v4 = source / "geoip" if family == "geoip" else None
    v6 = source / "geoip6" if family == "geoip6" else None
    stats = build_country_mmdb(v4, v6, out)
    with geoip2.database.Reader(str(out)) as reader:
        if v4:
            assert reader.country("1.0.0.1").country.iso_code == "AU"
            assert stats.ranges_v6 == 0
        else:
            assert reader.country("2001:2::1").country.iso_code == "JP"
            with pytest.raises(geoip2.errors.AddressNotFoundError):
                reader.country("1.0.0.1")


def test_build_needs_a_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        build_country_mmdb(None, None, tmp_path / "x.mmdb")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("1,2", "expected LOW,HIGH,CC"),
        ("x,2,DE", "not an IPv4 address"),
        ("10,2,DE", "LOW is above HIGH"),
        ("1,4294967296,DE", "not an IPv4 address"),
    ],
)
def test_malformed_v4_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "geoip"
    path.write_text(f"# header\n1,1,DE\n{line}\n")
    with pytest.raises(ConfigError) as err:
        read_ranges(path, 4)
    assert err.value.where == f"{path}:3"
    assert problem in err.value.message


def test_malformed_v6_line(tmp_path: Path) -> None:
    path = tmp_path / "geoip6"
    path.write_text("2001:2::,nonsense,JP\n")
    with pytest.raises(ConfigError) as err:
        read_ranges(path, 6)
    assert err.value.where == f"{path}:1"


def test_overlapping_ranges_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "geoip"
    path.write_text("100,200,DE\n150,300,FR\n")
    with pytest.raises(ConfigError) as err:
        read_ranges(path, 4)
    assert "overlaps" in err.value.message


def test_failed_build_keeps_the_old_database(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "country.mmdb"
    build_country_mmdb(source / "geoip", None, out)
    before = out.read_bytes()
    bad = tmp_path / "bad"
    bad.write_text("1,2,DE\ngarbage\n")
    with pytest.raises(ConfigError):
        build_country_mmdb(bad, None, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "country.mmdb", "tor"]


def test_run_build_default_output_and_if_missing(source: Path, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert default_output(settings) == settings.data_dir / "geo" / "country.mmdb"
    assert settings.geoip_path is None
    stats = run_build(settings, source, None, if_missing=True)
    assert stats is not None
    assert stats.output == default_output(settings)
    assert settings.geoip_path == default_output(settings)  # Settings finds it now
    assert run_build(settings, source, None, if_missing=True) is None
    again = run_build(settings, source, None, if_missing=False)
    assert again is not None
    assert again.as_json()["ranges_v4"] == 7


def test_run_build_explicit_output(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "c.mmdb"
    stats = run_build(make_settings(tmp_path), source, out, if_missing=False)
    assert stats is not None
    assert out.exists()


def test_run_build_without_source_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        run_build(make_settings(tmp_path), tmp_path, None, if_missing=False)
    assert "tor-geoipdb" in err.value.hint


@pytest.mark.slow
def test_full_build_from_debian_tor_geoipdb(tmp_path: Path) -> None:
    """End to end on the real data (~11 CPU s here): the file the gateway ships by default."""
    out = tmp_path / "country.mmdb"
    # CPU time, not wall time: the budget is about our work, not about a busy CI machine.
    started = time.process_time()
    stats = build_country_mmdb(DEFAULT_SOURCE / "geoip", DEFAULT_SOURCE / "geoip6", out)
    assert time.process_time() - started < 60
    assert stats.ranges_v4 > 100_000
    assert stats.ranges_v6 > 100_000
    assert stats.countries > 200
    assert 2_000_000 < stats.size_bytes < 30_000_000
    started = time.process_time()
    db = GeoDatabase(out)
    assert time.process_time() - started < 2
    assert db.validation == "sampled"
    # Large, long-stable allocations.
    assert db.lookup("8.8.8.8").country == "US"
    assert db.lookup("::ffff:8.8.8.8").country == "US"
    assert db.lookup("193.99.144.80").country == "DE"
    assert db.lookup("2a00:1450:4001::1").country is not None
    assert db.lookup("127.0.0.1") == UNKNOWN_REGION
    db.close()


# Disjoint ranges as (gap before, length, country); small numbers so CIDR splits are many.
RANGES = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=300),
        st.integers(min_value=1, max_value=700),
        st.sampled_from(["DE", "FR", "US", "??", "EU"]),
    ),
    min_size=1,
    max_size=12,
)


@given(spec=RANGES, base=st.integers(min_value=0, max_value=(1 << 32) - 20_000))
@settings(max_examples=40, deadline=None)
def test_every_address_maps_to_its_range(spec: list[tuple[int, int, str]], base: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "geoip", Path(tmp) / "c.mmdb"
        rows, low = [], base
        for gap, length, code in spec:
            low += gap
            rows.append((low, low + length - 1, code))
            low += length
        src.write_text("".join(f"{lo},{hi},{cc}\n" for lo, hi, cc in rows))
        build_country_mmdb(src, None, out)
        with maxminddb.open_database(str(out)) as reader:
            probes = {base, low, low + 1}
            for lo, hi, _ in rows:
                probes |= {lo - 1, lo, lo + 1, (lo + hi) // 2, hi - 1, hi, hi + 1}
            for probe in sorted(p for p in probes if 0 <= p < 1 << 32):
                want = next((cc for lo, hi, cc in rows if lo <= probe <= hi), None)
                record = reader.get(str(ipaddress.IPv4Address(probe)))
                if want in (None, "??"):
                    assert record is None, probe
                elif want == "EU":
                    assert record == {"continent": {"code": "EU"}}
                else:
                    assert record == {"country": {"iso_code": want}}, probe
