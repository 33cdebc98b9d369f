"""The IAB Europe Global Vendor List (GVL v3, TCF v2.2+), parsed and validated as values.

The operator ships a snapshot (``consent-gateway tcf gvl import FILE``); nothing is fetched at
run time. Only what the gateway reads is kept: the list's version and date, the purposes,
special features and stacks with their English texts, and per vendor its name, declared
purposes per legal basis, special features and privacy policy URL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.core.errors import ConfigError

SPECIFICATION_VERSION = 3
MAX_BYTES = 32 << 20  # the full GVL is ~2-3 MB; anything far bigger is not one


@dataclass(frozen=True)
class Text:
    """A purpose, special feature or stack: its id, English name and description."""

    id: int
    name: str
    description: str
    purposes: tuple[int, ...] = ()  # stacks only
    special_features: tuple[int, ...] = ()  # stacks only


@dataclass(frozen=True)
class Vendor:
    id: int
    name: str
    purposes: tuple[int, ...]  # declared on consent
    leg_int_purposes: tuple[int, ...]  # declared on legitimate interest
    flexible_purposes: tuple[int, ...]
    special_features: tuple[int, ...]
    policy_url: str
    deleted: bool  # a deletedDate is set: it may no longer be disclosed


@dataclass(frozen=True)
class GlobalVendorList:
    vendor_list_version: int
    tcf_policy_version: int
    last_updated: dt.datetime
    purposes: Mapping[int, Text]
    special_features: Mapping[int, Text]
    stacks: Mapping[int, Text]
    vendors: Mapping[int, Vendor]

    def age_days(self, now: dt.datetime) -> float:
        return (now - self.last_updated).total_seconds() / 86400


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(
        message,
        where=f"vendor list: {where}",
        hint="import the vendor-list.json IAB Europe publishes (GVL v3)",
    )


def _int(data: Mapping[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    if type(value) is not int or value < 0:
        raise _fail(f"{where}.{key}", "expected a whole number")
    return value


def _str(data: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise _fail(f"{where}.{key}", "expected text")
    return value


def _ids(data: Mapping[str, Any], key: str, where: str) -> tuple[int, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or any(type(i) is not int or i < 1 for i in value):
        raise _fail(f"{where}.{key}", "expected a list of ids")
    return tuple(sorted(set(value)))


def _table(data: Mapping[str, Any], key: str) -> dict[int, Mapping[str, Any]]:
    """A GVL table keyed by the id as text; each entry's ``id`` must match its key."""
    value = data.get(key)
    if not isinstance(value, dict):
        raise _fail(key, "expected an object keyed by id")
    out: dict[int, Mapping[str, Any]] = {}
    for name, entry in value.items():
        where = f"{key}.{name}"
        if not isinstance(entry, dict) or not name.isdigit() or entry.get("id") != int(name):
            raise _fail(where, "expected an object whose id is its key")
        out[int(name)] = entry
    return out


def _texts(data: Mapping[str, Any], key: str) -> dict[int, Text]:
    return {
        i: Text(
            i,
            _str(e, "name", f"{key}.{i}"),
            _str(e, "description", f"{key}.{i}", ""),
            _ids(e, "purposes", f"{key}.{i}"),
            _ids(e, "specialFeatures", f"{key}.{i}"),
        )
        for i, e in _table(data, key).items()
    }


def _policy_url(entry: Mapping[str, Any], where: str) -> str:
    urls = entry.get("urls", [])
    if not isinstance(urls, list):
        raise _fail(f"{where}.urls", "expected a list")
    for item in urls:
        if isinstance(item, dict) and isinstance(item.get("privacy"), str):
            url: str = item["privacy"]
            return url if url.startswith(("https://", "http://")) else ""
    return ""


def parse(raw: bytes) -> GlobalVendorList:
    """Validate a GVL v3 document; raises ConfigError naming the field at fault."""
    if len(raw) > MAX_BYTES:
        raise _fail("(file)", f"larger than {MAX_BYTES >> 20} MiB")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _fail("(file)", f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _fail("(file)", "expected a JSON object")
    spec = data.get("gvlSpecificationVersion")
    if spec != SPECIFICATION_VERSION:
        raise _fail("gvlSpecificationVersion", f"is {spec!r}; the gateway reads version 3")
    try:
        updated = dt.datetime.fromisoformat(_str(data, "lastUpdated", "(top)"))
    except ValueError:
        raise _fail("lastUpdated", "expected an ISO 8601 date-time") from None
    if updated.tzinfo is None:
        updated = updated.replace(tzinfo=dt.UTC)
    version = _int(data, "vendorListVersion", "(top)")
    if version < 1:
        raise _fail("vendorListVersion", "must be 1 or more")
    purposes = _texts(data, "purposes")
    vendors = {}
    for i, e in _table(data, "vendors").items():
        where = f"vendors.{i}"
        vendor = Vendor(
            id=i,
            name=_str(e, "name", where),
            purposes=_ids(e, "purposes", where),
            leg_int_purposes=_ids(e, "legIntPurposes", where),
            flexible_purposes=_ids(e, "flexiblePurposes", where),
            special_features=_ids(e, "specialFeatures", where),
            policy_url=_policy_url(e, where),
            deleted=e.get("deletedDate") is not None,
        )
        unknown = [p for p in (*vendor.purposes, *vendor.leg_int_purposes) if p not in purposes]
        if unknown:
            raise _fail(where, f"declares purpose {unknown[0]}, which the list does not define")
        vendors[i] = vendor
    return GlobalVendorList(
        vendor_list_version=version,
        tcf_policy_version=_int(data, "tcfPolicyVersion", "(top)"),
        last_updated=updated,
        purposes=purposes,
        special_features=_texts(data, "specialFeatures"),
        stacks=_texts(data, "stacks"),
        vendors=vendors,
    )
