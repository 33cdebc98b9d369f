"""CDN geo headers: header_pairs and region_from_headers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from gateway.core.errors import ConfigError
from gateway.core.model import Region
from gateway.geo import cdn_headers as geoheaders
from gateway.geo.cdn_headers import header_pairs, region_from_headers
from tests.test_clientip import hdrs

ALL_FAMILIES = ("cloudflare", "cloudfront", "vercel", "akamai")


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


# --- properties ----------------------------------------------------------------------------


@given(
    country=st.binary(max_size=20),
    region=st.binary(max_size=20),
    family=st.sampled_from(["cloudflare", "cloudfront", "vercel"]),
)
@settings(max_examples=300, deadline=None)
def test_geo_headers_never_fail_and_only_yield_codes(
    country: bytes, region: bytes, family: str
) -> None:
    country_name, region_name = geoheaders.GEO_HEADER_FAMILIES[family]
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
