"""GPP strings: ``Header~Section~…``, from IAB Tech Lab's Global Privacy Platform specification.

The header (Type 3, Version 1, the section ids as a Fibonacci range) lists the sections in the
order they follow; sections are ``tcfeuv2`` (2, a TC string), ``uspv1`` (6, the deprecated
four-character US Privacy string, decoded but never to be emitted) and the US sections
(7 ``usnat``, 8-27 the states). JSON uses @iabgpp/cmpapi's names: ``{"header": {"Id", "Version",
"SectionIds"}, "<section name>": {fields}}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.standards import base64url, gpp_tcfeuv2, gpp_us
from gateway.standards.bits import BitReader, BitWriter
from gateway.standards.errors import InvalidModel, MalformedString
from gateway.standards.ranges import IdBudget, read_fibonacci_range, write_fibonacci_range
from gateway.standards.us_sections import US_SECTIONS, UsSection

MAX_LENGTH = 32_768
HEADER_TYPE, HEADER_VERSION = 3, 1
TCFEUV2, USPV1 = (2, "tcfeuv2"), (6, "uspv1")
US_BY_ID: dict[int, UsSection] = {s.id: s for s in US_SECTIONS}
SECTION_NAMES: dict[int, str] = {
    TCFEUV2[0]: TCFEUV2[1],
    USPV1[0]: USPV1[1],
    **{s.id: s.name for s in US_SECTIONS},
}
SECTION_IDS: dict[str, int] = {name: number for number, name in SECTION_NAMES.items()}
_UNSUPPORTED = {
    1: "tcfeuv1 (deprecated)",
    3: "the header",
    4: "signal integrity",
    5: "tcfcav1 (IAB Canada TCF)",
}
_USP = re.compile(r"1[YN-][YN-][YN-]")


def _header(text: str) -> list[int]:
    reader = BitReader(base64url.decode(text, "gpp", "header"), "gpp", "header")
    kind = reader.number(6, "Type")
    if kind != HEADER_TYPE:
        raise reader.fail(f"Type is {kind}; a GPP header has Type 3")
    version = reader.number(6, "Version")
    if version != HEADER_VERSION:
        raise reader.fail(f"Version is {version}; only GPP version 1 is supported")
    ids = read_fibonacci_range(reader, "SectionIds", IdBudget(64))
    if "1" in reader.bits[reader.pos :]:
        raise reader.fail(f"unexpected data after the section ids (bit {reader.pos})")
    return ids


def _uspv1(text: str) -> dict[str, Any]:
    if not _USP.fullmatch(text):
        raise MalformedString(
            "gpp", f"uspv1 section {text!r} is not version 1 followed by three of Y, N or -"
        )
    return {"Version": 1, "Notice": text[1], "OptOutSale": text[2], "LspaCovered": text[3]}


def decode(text: str, *, strict: bool = True) -> dict[str, Any]:
    """The header and every section of a GPP string, as iabgpp-named JSON values."""
    if not isinstance(text, str):
        raise MalformedString("gpp", "expected text")
    if len(text) > MAX_LENGTH:
        raise MalformedString("gpp", f"{len(text)} characters is longer than {MAX_LENGTH}")
    parts = text.split("~")
    ids = _header(parts[0])
    if len(ids) != len(parts) - 1:
        raise MalformedString(
            "gpp", f"the header lists {len(ids)} section(s) but {len(parts) - 1} follow"
        )
    out: dict[str, Any] = {
        "header": {"Id": HEADER_TYPE, "Version": HEADER_VERSION, "SectionIds": ids}
    }
    for number, part in zip(ids, parts[1:], strict=True):
        if number not in SECTION_NAMES:
            what = _UNSUPPORTED.get(number, "not in the GPP section registry")
            raise MalformedString("gpp", f"section id {number} is not supported: {what}")
        name = SECTION_NAMES[number]
        if number == TCFEUV2[0]:
            try:
                out[name] = gpp_tcfeuv2.decode(part, strict=strict)
            except MalformedString as exc:
                raise MalformedString("gpp", f"tcfeuv2 section: {exc.detail}") from None
        elif number == USPV1[0]:
            out[name] = _uspv1(part)
        else:
            out[name] = gpp_us.decode(US_BY_ID[number], part)
    return out


def _encode_uspv1(data: Mapping[str, Any]) -> str:
    if set(data) - {"Version", "Notice", "OptOutSale", "LspaCovered"}:
        raise InvalidModel("gpp", "uspv1", "fields are Version, Notice, OptOutSale, LspaCovered")
    if data.get("Version", 1) != 1:
        raise InvalidModel("gpp", "uspv1.Version", "must be 1")
    text = "1" + "".join(
        str(data.get(name, "-")) for name in ("Notice", "OptOutSale", "LspaCovered")
    )
    if not _USP.fullmatch(text):
        raise InvalidModel("gpp", "uspv1", "Notice, OptOutSale and LspaCovered are Y, N or -")
    return text


def encode(data: Any) -> str:
    """A GPP string from iabgpp-named JSON; sections are written in ascending id order, as the
    header's Fibonacci range requires."""
    if not isinstance(data, Mapping):
        raise InvalidModel("gpp", "(top level)", "expected a JSON object keyed by section name")
    sections: list[tuple[int, Mapping[str, Any]]] = []
    for name, fields in data.items():
        if name == "header":
            continue
        if name not in SECTION_IDS:
            raise InvalidModel("gpp", str(name), "not a supported GPP section name")
        if not isinstance(fields, Mapping):
            raise InvalidModel("gpp", name, "expected an object of fields")
        sections.append((SECTION_IDS[name], fields))
    sections.sort(key=lambda item: item[0])
    ids = [number for number, _ in sections]
    header = data.get("header")
    if header is not None and (
        not isinstance(header, Mapping)
        or header.get("Id", HEADER_TYPE) != HEADER_TYPE
        or header.get("Version", HEADER_VERSION) != HEADER_VERSION
        or ("SectionIds" in header and header["SectionIds"] != ids)
    ):
        raise InvalidModel(
            "gpp", "header", f"must be Id 3, Version 1 and list the sections given ({ids})"
        )
    writer = BitWriter()
    writer.number(HEADER_TYPE, 6)
    writer.number(HEADER_VERSION, 6)
    write_fibonacci_range(writer, ids)
    parts = [base64url.encode(writer.text(), "gpp")]
    for number, fields in sections:
        if number == TCFEUV2[0]:
            parts.append(gpp_tcfeuv2.encode(fields))
        elif number == USPV1[0]:
            parts.append(_encode_uspv1(fields))
        else:
            parts.append(gpp_us.encode(US_BY_ID[number], fields))
    return "~".join(parts)
