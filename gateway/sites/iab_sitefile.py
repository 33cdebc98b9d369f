"""Parse ``[tcf]`` and ``[gpp]`` of a site.toml into ``core.iab`` settings, naming file and key.

Only the shape is checked here (types, ranges, known names); what needs the Global Vendor List
or the TCF Policies (unknown vendors, purposes that may not rest on legitimate interest, an old
vendor list) is reported by ``consent-gateway check`` (``gateway/cli/iab_checks.py``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from gateway.core.errors import ConfigError
from gateway.core.iab import (
    ISSUED_SECTIONS,
    RESTRICTION_TYPES,
    GppSettings,
    TcfRestriction,
    TcfSettings,
)

TCF_KEYS = {
    "cmp_id",
    "cmp_version",
    "publisher_country",
    "vendors",
    "consent",
    "legitimate_interest",
    "special_features",
    "restrictions",
    "rules",
    "gvl_max_age_days",
}
GPP_KEYS = {"cmp_id", "cmp_version", "regions", "mspa_covered", "mspa_mode"}
RESTRICTION_KEYS = {"purpose", "type", "vendors"}
MSPA_MODES = ("", "opt_out", "service_provider")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_REGION = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")
MAX_PURPOSE = 11  # TCF v2.3 purposes 1-11
MAX_SPECIAL_FEATURE = 2
MAX_VENDOR_ID = 0xFFFF


def _fail(path: Path, key: str, message: str, hint: str = "") -> ConfigError:
    return ConfigError(message, where=f"{path}: {key}", hint=hint)


def _check_keys(path: Path, prefix: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise _fail(
                path, prefix + key, "unknown key", f"allowed keys: {', '.join(sorted(allowed))}"
            )


def _int(path: Path, key: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _fail(path, key, f"expected a whole number from {low} to {high}")
    return value


def _ids(path: Path, key: str, value: Any, high: int) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise _fail(path, key, "expected a list of ids", "e.g. [1, 2, 7]")
    ids = [_int(path, key, item, 1, high) for item in value]
    if len(set(ids)) != len(ids):
        raise _fail(path, key, "an id is listed twice")
    return tuple(sorted(ids))


def _by_purpose(
    path: Path, key: str, value: Any, purposes: Collection[str], high: int
) -> dict[str, tuple[int, ...]]:
    """``{site purpose id = [TCF ids]}``: each key must be one of the site's purposes."""
    if not isinstance(value, dict):
        raise _fail(path, key, "expected a table of site purpose = [TCF ids]", "marketing = [2, 7]")
    out: dict[str, tuple[int, ...]] = {}
    for purpose, ids in value.items():
        if purpose not in purposes:
            raise _fail(
                path,
                f"{key}.{purpose}",
                f"unknown site purpose {purpose!r}",
                f"declared: {', '.join(sorted(purposes))}",
            )
        out[purpose] = _ids(path, f"{key}.{purpose}", ids, high)
    return out


def _restrictions(path: Path, value: Any, vendors: tuple[int, ...]) -> tuple[TcfRestriction, ...]:
    if not isinstance(value, list):
        raise _fail(path, "tcf.restrictions", "expected an array of tables ([[tcf.restrictions]])")
    out = []
    for index, table in enumerate(value):
        key = f"tcf.restrictions[{index}]"
        if not isinstance(table, dict):
            raise _fail(path, key, "expected a table")
        _check_keys(path, key + ".", table, RESTRICTION_KEYS)
        kind = table.get("type")
        if not isinstance(kind, str) or kind not in RESTRICTION_TYPES:
            raise _fail(path, key + ".type", f"unknown type {kind!r}", ", ".join(RESTRICTION_TYPES))
        restricted = _ids(path, key + ".vendors", table.get("vendors", []), MAX_VENDOR_ID)
        outside = [v for v in restricted if v not in vendors]
        if outside:
            raise _fail(
                path, key + ".vendors", f"vendor {outside[0]} is not in tcf.vendors", "add it there"
            )
        purpose = _int(path, key + ".purpose", table.get("purpose"), 1, MAX_PURPOSE)
        out.append(TcfRestriction(purpose, RESTRICTION_TYPES[kind], restricted))
    return tuple(out)


def parse_tcf(path: Path, table: Any, purposes: Collection[str]) -> TcfSettings | None:
    """``[tcf]``, or None when the site has none."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise _fail(path, "tcf", "expected a table")
    _check_keys(path, "tcf.", table, TCF_KEYS)
    country = table.get("publisher_country", "AA")
    if not isinstance(country, str) or not _COUNTRY.match(country):
        raise _fail(path, "tcf.publisher_country", "expected an ISO 3166-1 alpha-2 code", "DE")
    vendors = _ids(path, "tcf.vendors", table.get("vendors", []), MAX_VENDOR_ID)
    rules = table.get("rules", ["gdpr", "uk"])
    if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
        raise _fail(path, "tcf.rules", "expected a list of rule ids", '["gdpr", "uk"]')
    return TcfSettings(
        cmp_id=_int(path, "tcf.cmp_id", table.get("cmp_id", 0), 0, 4095),
        cmp_version=_int(path, "tcf.cmp_version", table.get("cmp_version", 1), 0, 4095),
        publisher_country=country,
        vendors=vendors,
        consent=_by_purpose(path, "tcf.consent", table.get("consent", {}), purposes, MAX_PURPOSE),
        legitimate_interest=_by_purpose(
            path,
            "tcf.legitimate_interest",
            table.get("legitimate_interest", {}),
            purposes,
            MAX_PURPOSE,
        ),
        special_features=_by_purpose(
            path,
            "tcf.special_features",
            table.get("special_features", {}),
            purposes,
            MAX_SPECIAL_FEATURE,
        ),
        restrictions=_restrictions(path, table.get("restrictions", []), vendors),
        rules=tuple(rules),
        gvl_max_age_days=_int(
            path, "tcf.gvl_max_age_days", table.get("gvl_max_age_days", 14), 1, 3650
        ),
    )


def parse_gpp(path: Path, table: Any) -> GppSettings | None:
    """``[gpp]``, or None when the site has none."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise _fail(path, "gpp", "expected a table")
    _check_keys(path, "gpp.", table, GPP_KEYS)
    regions_raw = table.get("regions", {})
    if not isinstance(regions_raw, dict):
        raise _fail(path, "gpp.regions", "expected a table", '"US" = ["usnat"]')
    regions: dict[str, tuple[str, ...]] = {}
    for code, sections in regions_raw.items():
        key = f"gpp.regions.{code}"
        if not _REGION.match(code):
            raise _fail(path, key, f"invalid region {code!r}", "ISO 3166 codes: US, US-CA, DE")
        if not isinstance(sections, list) or any(s not in ISSUED_SECTIONS for s in sections):
            raise _fail(
                path,
                key,
                "expected a list of the sections the gateway writes",
                f"one or more of {', '.join(ISSUED_SECTIONS)}, or [] for none",
            )
        regions[code] = tuple(sections)
    mode = table.get("mspa_mode", "")
    if mode not in MSPA_MODES:
        raise _fail(path, "gpp.mspa_mode", f"unknown mode {mode!r}", "opt_out or service_provider")
    covered = table.get("mspa_covered", False)
    if type(covered) is not bool:
        raise _fail(path, "gpp.mspa_covered", "expected true or false")
    return GppSettings(
        cmp_id=_int(path, "gpp.cmp_id", table.get("cmp_id", 0), 0, 4095),
        cmp_version=_int(path, "gpp.cmp_version", table.get("cmp_version", 1), 0, 4095),
        regions=regions,
        mspa_covered=covered,
        mspa_mode=mode,
    )
