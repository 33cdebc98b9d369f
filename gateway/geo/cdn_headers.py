"""Where a trusted CDN says the visitor is: its geo header families, read into a Region."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from starlette.datastructures import Headers

from gateway.core.errors import ConfigError
from gateway.core.model import Region
from gateway.geo.clientip import collect_headers

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


def country_code(value: str) -> str | None:
    """ISO 3166-1 alpha-2 code, upper case; None for malformed or "unknown" placeholders."""
    code = value.strip().upper()
    if len(code) != 2 or not code.isascii() or not code.isalpha() or code in UNKNOWN_COUNTRIES:
        return None
    return code


def subdivision_code(value: str, country: str) -> str | None:
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
    keys = pair_keys(header_pairs(families, country_header, region_header))
    return region_from_found(collect_headers(headers, pair_names(keys)), keys)


PairKeys = tuple[tuple[bytes, bytes], ...]


def pair_keys(pairs: tuple[tuple[str, str], ...]) -> PairKeys:
    """The header pairs as the raw (bytes) names a server hands over."""
    return tuple((c.encode("latin-1"), r.encode("latin-1")) for c, r in pairs)


def pair_names(keys: PairKeys) -> frozenset[bytes]:
    """Every raw header name the pairs read (for one ``collect_headers`` pass)."""
    return frozenset(name for pair in keys for name in pair if name)


_AKAMAI_KEY = AKAMAI_EDGESCAPE.encode()


def region_from_found(found: dict[bytes, list[bytes]], keys: PairKeys) -> Region | None:
    """The first pair, in order, whose country header holds a real country code."""
    for country_key, region_key in keys:
        lines = found.get(country_key)
        if not lines:
            continue
        region_lines = found.get(region_key) if region_key else None
        raw, region_raw = lines[0], region_lines[0] if region_lines else b""
        decide = _remembered_region if len(raw) + len(region_raw) <= 200 else _header_region
        region = decide(country_key == _AKAMAI_KEY, raw, region_raw)
        if region is not None:
            return region
        # "unknown" from this CDN: let the next source try
    return None


def _header_region(edgescape: bool, raw: bytes, region_raw: bytes) -> Region | None:
    """The Region for one pair of raw header values, or None."""
    country_text, region_text = raw.decode("latin-1"), region_raw.decode("latin-1")
    if edgescape:
        country_text, region_text = _edgescape(country_text)
    country = country_code(country_text)
    if country is None:
        return None
    return Region(country, subdivision_code(region_text, country) or None, "header")


# Few distinct values occur, and one shared Region per value lets the serving memo compare
# keys by identity; only short values are remembered (an EdgeScape line is ~150 bytes).
_remembered_region = functools.lru_cache(maxsize=4096)(_header_region)
