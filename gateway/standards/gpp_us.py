"""Decoding and encoding GPP's US sections from their layouts (``us_sections``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.standards import base64url
from gateway.standards.bits import BitReader, BitWriter
from gateway.standards.errors import InvalidModel, MalformedString
from gateway.standards.us_sections import Field, UsSection

SENSITIVE: Field = ("SensitiveDataProcessing", 2, 8, 0, 2)
GPC_INCLUDED = "GpcSegmentIncluded"
SENSITIVE_INCLUDED = "SensitiveDataConsentSegmentIncluded"


def _read(reader: BitReader, field: Field) -> int | list[int]:
    name, bits, count, low, high = field
    values = [reader.number(bits, f"{name}[{n + 1}]" if count else name) for n in range(count or 1)]
    for value in values:
        if not low <= value <= high:
            raise reader.fail(
                f"{name} has the value {value}; the specification allows {low}..{high}"
            )
    return values if count else values[0]


def _end(reader: BitReader) -> None:
    if "1" in reader.bits[reader.pos :]:
        raise reader.fail(f"unexpected data after the last field (bit {reader.pos})")


def decode(section: UsSection, text: str) -> dict[str, Any]:
    """The fields of one US section (core, then its optional subsection)."""
    parts = text.split(".")
    where = f"{section.name} core subsection"
    bits = base64url.decode(parts[0], "gpp", where)
    reader = BitReader(bits, "gpp", where)
    layout = section.layouts[section.current]
    if section.versioned:
        version = int(bits[:6], 2) if len(bits) >= 6 else -1
        if version not in section.layouts:
            known = ", ".join(map(str, section.layouts))
            raise reader.fail(f"Version {version} is not a known {section.name} version ({known})")
        layout = section.layouts[version]
    out: dict[str, Any] = {field[0]: _read(reader, field) for field in layout}
    _end(reader)
    if len(parts) > 2 or (len(parts) == 2 and section.subsection is None):
        allowed = "one subsection" if section.subsection else "no subsections"
        raise MalformedString("gpp", f"{section.name} has {len(parts) - 1} subsections ({allowed})")
    sub = parts[1] if len(parts) == 2 else None
    if section.subsection == "gpc":
        out.update(_gpc(section, sub))
    elif section.subsection == "sensitive":
        out[SENSITIVE_INCLUDED] = sub is not None
        values: list[int] = [0] * SENSITIVE[2]
        if sub is not None:
            where = f"{section.name} sensitive data subsection"
            r = BitReader(base64url.decode(sub, "gpp", where), "gpp", where)
            values = _read(r, SENSITIVE)  # type: ignore[assignment]
            _end(r)
        out[SENSITIVE[0]] = values
    return out


def _gpc(section: UsSection, text: str | None) -> dict[str, Any]:
    if text is None:
        return {"GpcSegmentType": 1, GPC_INCLUDED: False, "Gpc": False}
    where = f"{section.name} GPC subsection"
    reader = BitReader(base64url.decode(text, "gpp", where), "gpp", where)
    kind = reader.number(2, "SubsectionType")
    if kind != 1:
        raise reader.fail(f"SubsectionType is {kind}; the GPC subsection is type 1")
    gpc = reader.flag("Gpc")
    _end(reader)
    return {"GpcSegmentType": 1, GPC_INCLUDED: True, "Gpc": gpc}


def _value(section: UsSection, field: Field, raw: Any) -> int | list[int]:
    name, _, count, low, high = field
    where = f"{section.name}.{name}"
    items = raw if count else [raw]
    if count and (not isinstance(raw, list) or len(raw) != count):
        raise InvalidModel("gpp", where, f"expected a list of {count} values in {low}..{high}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= high:
            raise InvalidModel("gpp", where, f"{item!r} is not a value in {low}..{high}")
    return list(items) if count else items[0]


def encode(section: UsSection, data: Mapping[str, Any]) -> str:
    """One US section from iabgpp-named fields; missing fields take the library's defaults."""
    version = section.current
    if section.versioned and "Version" in data:
        version = data["Version"]
        if isinstance(version, bool) or version not in section.layouts:
            known = ", ".join(map(str, section.layouts))
            raise InvalidModel("gpp", f"{section.name}.Version", f"must be one of {known}")
    layout = section.layouts[version]
    known_names = {field[0] for field in layout}
    if section.subsection == "gpc":
        known_names |= {"GpcSegmentType", GPC_INCLUDED, "Gpc"}
    elif section.subsection == "sensitive":
        known_names |= {SENSITIVE[0], SENSITIVE_INCLUDED}
    for key in data:
        if key not in known_names:
            raise InvalidModel("gpp", f"{section.name}.{key}", "not a field of this section")
    writer = BitWriter()
    for field in layout:
        name, bits, count, low, _ = field
        if name in ("Version", "MspaVersion"):
            default: Any = version if name == "Version" else 1
        else:
            default = [0] * count if count else low
        value = _value(section, field, data.get(name, default))
        for item in value if isinstance(value, list) else [value]:
            writer.number(item, bits)
    parts = [base64url.encode(writer.text(), "gpp")]
    if section.subsection == "gpc":
        if data.get("GpcSegmentType", 1) != 1:
            raise InvalidModel("gpp", f"{section.name}.GpcSegmentType", "must be 1")
        if _flag(section, data, GPC_INCLUDED):
            sub = BitWriter()
            sub.number(1, 2)
            sub.flag(_flag(section, data, "Gpc", default=False))
            parts.append(base64url.encode(sub.text(), "gpp"))
    elif section.subsection == "sensitive" and _flag(section, data, SENSITIVE_INCLUDED):
        sub = BitWriter()
        for item in _value(section, SENSITIVE, data.get(SENSITIVE[0], [0] * 8)):  # type: ignore[union-attr]
            sub.number(item, 2)
        parts.append(base64url.encode(sub.text(), "gpp"))
    return ".".join(parts)


def _flag(section: UsSection, data: Mapping[str, Any], name: str, default: bool = True) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise InvalidModel("gpp", f"{section.name}.{name}", "expected true or false")
    return value
