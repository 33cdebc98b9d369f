"""TCF v2.3 TC strings: ``Core.DisclosedVendors[.PublisherTC]``, base64url, bit by bit.

Built from IAB Tech Lab's "Consent string and vendor list formats v2" (TCF v2.3). ``decode``
rejects anything the specification does not allow with a ``MalformedString`` naming the
segment, the field and the bit; ``encode`` writes what @iabtechlabtcf/core writes for the same
model, byte for byte.
"""

from __future__ import annotations

from gateway.standards import base64url
from gateway.standards.bits import BitReader, BitWriter
from gateway.standards.errors import InvalidModel, MalformedString
from gateway.standards.ranges import (
    Choice,
    IdBudget,
    groups,
    read_int_range,
    read_vendor_vector,
    write_int_range,
    write_vendor_vector,
)
from gateway.standards.tcf_model import (
    ALLOWED,
    CORE,
    DISCLOSED,
    PUBLISHER,
    SEGMENT_TYPES,
    PurposeRestriction,
    TCModel,
    conformance_problem,
)

MAX_LENGTH = 32_768
"""Characters accepted: real TC strings are a few hundred; the bound caps the work a hostile
string can cause."""

_SEGMENT_NAMES = {number: name for name, number in SEGMENT_TYPES.items()}


def _letters(reader: BitReader, name: str) -> str:
    out = ""
    for n in range(2):
        value = reader.number(6, name)
        if value > 25:
            raise reader.fail(f"{name} letter {n + 1} has value {value}, not a letter (0-25)")
        out += chr(ord("A") + value)
    return out


def _core(bits: str, budget: IdBudget) -> dict[str, object]:
    r = BitReader(bits, "tc", "core segment")
    version = r.number(6, "Version")
    if version != 2:
        raise r.fail(f"Version is {version}; only version 2 TC strings are supported")
    values: dict[str, object] = {
        "version": version,
        "created": r.number(36, "Created"),
        "last_updated": r.number(36, "LastUpdated"),
        "cmp_id": r.number(12, "CmpId"),
        "cmp_version": r.number(12, "CmpVersion"),
        "consent_screen": r.number(6, "ConsentScreen"),
        "consent_language": _letters(r, "ConsentLanguage"),
        "vendor_list_version": r.number(12, "VendorListVersion"),
        "policy_version": r.number(6, "TcfPolicyVersion"),
        "is_service_specific": r.flag("IsServiceSpecific"),
        "use_non_standard_texts": r.flag("UseNonStandardTexts"),
        "special_feature_optins": tuple(r.id_list(12, "SpecialFeatureOptIns")),
        "purpose_consents": tuple(r.id_list(24, "PurposesConsent")),
        "purpose_legitimate_interests": tuple(r.id_list(24, "PurposesLITransparency")),
        "purpose_one_treatment": r.flag("PurposeOneTreatment"),
        "publisher_country_code": _letters(r, "PublisherCC"),
        "vendor_consents": tuple(read_vendor_vector(r, "Vendor Consent Section", budget)),
        "vendor_legitimate_interests": tuple(
            read_vendor_vector(r, "Vendor Legitimate Interest Section", budget)
        ),
    }
    restrictions: dict[tuple[int, int], set[int]] = {}
    for n in range(r.number(12, "NumPubRestrictions")):
        key = (
            r.number(6, f"PubRestrictionEntry {n + 1} PurposeId"),
            r.number(2, f"PubRestrictionEntry {n + 1} RestrictionType"),
        )
        if key[1] == 3:
            raise r.fail(f"PubRestrictionEntry {n + 1} has the undefined RestrictionType 3")
        ids = read_int_range(r, f"PubRestrictionEntry {n + 1}", budget)
        restrictions.setdefault(key, set()).update(ids)  # a repeated pair adds to the first
    values["publisher_restrictions"] = tuple(
        PurposeRestriction(p, t, tuple(sorted(ids))) for (p, t), ids in restrictions.items()
    )
    _padding(r)
    return values


def _padding(reader: BitReader) -> None:
    """After the last field only zero padding may follow, shorter than one 24-bit group."""
    rest = reader.bits[reader.pos :]
    if "1" in rest:
        raise reader.fail(f"unexpected data after the last field (bit {reader.pos})")


def _segment(bits: str, name: str, budget: IdBudget) -> dict[str, object]:
    r = BitReader(bits, "tc", f"{name} segment")
    r.number(3, "SegmentType")
    values: dict[str, object]
    if name == PUBLISHER:
        values = {
            "publisher_consents": tuple(r.id_list(24, "PubPurposesConsent")),
            "publisher_legitimate_interests": tuple(r.id_list(24, "PubPurposesLITransparency")),
        }
        count = r.number(6, "NumCustomPurposes")
        values["num_custom_purposes"] = count
        values["publisher_custom_consents"] = tuple(r.id_list(count, "CustomPurposesConsent"))
        values["publisher_custom_legitimate_interests"] = tuple(
            r.id_list(count, "CustomPurposesLITransparency")
        )
    else:
        values = {
            f"vendors_{'disclosed' if name == DISCLOSED else 'allowed'}": tuple(
                read_vendor_vector(r, name, budget)
            )
        }
    _padding(r)
    return values


def decode(text: str, *, strict: bool = True) -> TCModel:
    """The model of a TC string; ``strict`` also enforces the TCF v2.3 rules (service-specific,
    a DisclosedVendors segment, a CMP id, no legitimate interest for purposes 1 and 3-6)."""
    if not isinstance(text, str):
        raise MalformedString("tc", "expected text")
    if len(text) > MAX_LENGTH:
        raise MalformedString("tc", f"{len(text)} characters is longer than {MAX_LENGTH}")
    budget = IdBudget()
    parts = text.split(".")
    values = _core(base64url.decode(parts[0], "tc", "core segment"), budget)
    segments = [CORE]
    for n, part in enumerate(parts[1:], start=2):
        bits = base64url.decode(part, "tc", f"segment {n}")
        kind = int(bits[:3], 2)
        name = _SEGMENT_NAMES.get(kind)
        if name is None:
            raise MalformedString("tc", f"segment {n} has the unknown SegmentType {kind}")
        if name in segments:
            raise MalformedString("tc", f"segment {n} repeats the {name} segment")
        segments.append(name)
        values.update(_segment(bits, name, budget))
    model = TCModel(segments=tuple(segments), **values)  # type: ignore[arg-type]
    if strict:
        problem = conformance_problem(model)
        if problem is not None:
            raise MalformedString("tc", f"{problem[0]} {problem[1]}")
    return model


def _write_letters(writer: BitWriter, letters: str) -> None:
    for ch in letters:
        writer.number(ord(ch) - ord("A"), 6)


def core_bits(model: TCModel, choice: Choice) -> str:
    w = BitWriter()
    w.number(model.version, 6)
    w.number(model.created, 36)
    w.number(model.last_updated, 36)
    w.number(model.cmp_id, 12)
    w.number(model.cmp_version, 12)
    w.number(model.consent_screen, 6)
    _write_letters(w, model.consent_language)
    w.number(model.vendor_list_version, 12)
    w.number(model.policy_version, 6)
    w.flag(model.is_service_specific)
    w.flag(model.use_non_standard_texts)
    w.id_list(model.special_feature_optins, 12)
    w.id_list(model.purpose_consents, 24)
    w.id_list(model.purpose_legitimate_interests, 24)
    w.flag(model.purpose_one_treatment)
    _write_letters(w, model.publisher_country_code)
    write_vendor_vector(w, model.vendor_consents, choice)
    write_vendor_vector(w, model.vendor_legitimate_interests, choice)
    w.number(len(model.publisher_restrictions), 12)
    for restriction in model.publisher_restrictions:
        w.number(restriction.purpose_id, 6)
        w.number(restriction.restriction_type, 2)
        write_int_range(w, groups(restriction.vendor_ids))
    return w.text()


def segment_bits(model: TCModel, name: str, choice: Choice) -> str:
    w = BitWriter()
    w.number(SEGMENT_TYPES[name], 3)
    if name == PUBLISHER:
        w.id_list(model.publisher_consents, 24)
        w.id_list(model.publisher_legitimate_interests, 24)
        w.number(model.num_custom_purposes, 6)
        w.id_list(model.publisher_custom_consents, model.num_custom_purposes)
        w.id_list(model.publisher_custom_legitimate_interests, model.num_custom_purposes)
    else:
        ids = model.vendors_disclosed if name == DISCLOSED else model.vendors_allowed
        write_vendor_vector(w, ids, choice)
    return w.text()


def encode(model: TCModel, *, choice: Choice = "iabtcf") -> str:
    """The TC string of a model that conforms to TCF v2.3 (else ``InvalidModel``)."""
    problem = conformance_problem(model)
    if problem is not None:
        raise InvalidModel("tc", *problem)
    parts = []
    for name in model.segments:
        bits = core_bits(model, choice) if name == CORE else segment_bits(model, name, choice)
        parts.append(base64url.encode(bits, "tcf"))
    return ".".join(parts)


__all__ = ["ALLOWED", "DISCLOSED", "PUBLISHER", "TCModel", "decode", "encode"]
