"""TCF v2.3 TC strings: the specification's example, hand-built bits, hostile strings, and
property-based round trips (the reference library is in test_standards_reference.py)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.errors import BadRequest
from gateway.standards import tcf
from gateway.standards.errors import InvalidModel, MalformedString
from gateway.standards.tcf_model import (
    DEFAULT_SEGMENTS,
    PurposeRestriction,
    TCModel,
    from_json,
    to_json,
)

# "TC String Format" in IAB Tech Lab's Consent string and vendor list formats v2 (TCF v2.3).
SPEC_EXAMPLE = "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA"


def b64(bits: str) -> str:
    """Independent of the codec: bits padded to whole 24-bit groups, standard base64url."""
    bits += "0" * (-len(bits) % 24)
    raw = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def num(value: int, width: int) -> str:
    return format(value, f"0{width}b")


def test_the_specification_example_decodes_and_encodes_back_byte_for_byte() -> None:
    model = tcf.decode(SPEC_EXAMPLE)
    assert model.segments == ("core", "vendorsDisclosed", "publisherTC")
    assert model.version == 2 and model.is_service_specific
    assert tcf.encode(model) == SPEC_EXAMPLE


def test_disclosed_vendors_segment_read_as_the_field_table_describes() -> None:
    # SegmentType 1, MaxVendorId 404, range encoding, 3 entries: 1-5, 100, 404.
    bits = (
        num(1, 3)
        + num(404, 16)
        + "1"
        + num(3, 12)
        + "1"
        + num(1, 16)
        + num(5, 16)
        + "0"
        + num(100, 16)
        + "0"
        + num(404, 16)
    )
    assert b64(bits) == SPEC_EXAMPLE.split(".")[1]
    assert tcf.decode(SPEC_EXAMPLE).vendors_disclosed == (1, 2, 3, 4, 5, 100, 404)


def core_bits(**over: Any) -> str:
    """A core segment written field by field from the specification's table."""
    f: dict[str, Any] = {
        "version": 2,
        "created": 17_500_000_000,
        "updated": 17_500_000_000,
        "cmp": 300,
        "cmpv": 7,
        "screen": 1,
        "lang": "FR",
        "vlv": 120,
        "policy": 5,
        "ss": 1,
        "nst": 0,
        "sf": "1" + "0" * 11,
        "pc": "111" + "0" * 21,
        "pli": "01" + "0" * 22,
        "p1t": 0,
        "cc": "DE",
        "vendors": num(6, 16) + "0" + "101001",
        "vli": num(0, 16) + "0",
        "restrictions": num(1, 12)
        + num(2, 6)
        + num(1, 2)
        + num(1, 12)
        + "1"
        + num(3, 16)
        + num(5, 16),
    }
    f.update(over)
    letters = "".join(num(ord(c) - 65, 6) for c in str(f["lang"]) + str(f["cc"]))
    return (
        num(int(f["version"]), 6)
        + num(int(f["created"]), 36)
        + num(int(f["updated"]), 36)
        + num(int(f["cmp"]), 12)
        + num(int(f["cmpv"]), 12)
        + num(int(f["screen"]), 6)
        + letters[:12]
        + num(int(f["vlv"]), 12)
        + num(int(f["policy"]), 6)
        + str(f["ss"])
        + str(f["nst"])
        + str(f["sf"])
        + str(f["pc"])
        + str(f["pli"])
        + str(f["p1t"])
        + letters[12:]
        + str(f["vendors"])
        + str(f["vli"])
        + str(f["restrictions"])
    )


DISCLOSED = b64(num(1, 3) + num(6, 16) + "0" + "111101")


def test_a_hand_built_core_segment_decodes_field_by_field() -> None:
    model = tcf.decode(b64(core_bits()) + "." + DISCLOSED)
    assert (model.cmp_id, model.cmp_version, model.consent_screen) == (300, 7, 1)
    assert (model.consent_language, model.publisher_country_code) == ("FR", "DE")
    assert (model.vendor_list_version, model.policy_version) == (120, 5)
    assert model.created == model.last_updated == 17_500_000_000
    assert model.special_feature_optins == (1,)
    assert model.purpose_consents == (1, 2, 3)
    assert model.purpose_legitimate_interests == (2,)
    assert model.vendor_consents == (1, 3, 6)
    assert model.vendor_legitimate_interests == ()
    assert model.publisher_restrictions == (PurposeRestriction(2, 1, (3, 4, 5)),)
    assert model.vendors_disclosed == (1, 2, 3, 4, 6)
    assert model.segments == ("core", "vendorsDisclosed")
    assert tcf.encode(model) == b64(core_bits()) + "." + DISCLOSED


def test_json_uses_the_iabtcf_tcmodel_names_and_round_trips() -> None:
    data = to_json(tcf.decode(SPEC_EXAMPLE))
    for name in (
        "cmpId",
        "vendorListVersion",
        "policyVersion",
        "isServiceSpecific",
        "useNonStandardTexts",
        "purposeOneTreatment",
        "publisherCountryCode",
        "vendorConsents",
        "vendorLegitimateInterests",
        "publisherRestrictions",
        "vendorsDisclosed",
        "publisherConsents",
        "numCustomPurposes",
        "created",
    ):
        assert name in data
    assert data["created"] == "2025-06-03T00:00:00.000Z"
    assert tcf.encode(from_json(data)) == SPEC_EXAMPLE


def spoil(text: str, segment: int, bits_from: int, replacement: str) -> str:
    """``text`` with the bits of one segment overwritten from a bit offset."""
    parts = text.split(".")
    raw = "".join(
        num("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(c), 6)
        for c in parts[segment]
    )
    raw = raw[:bits_from] + replacement + raw[bits_from + len(replacement) :]
    parts[segment] = b64(raw)
    return ".".join(parts)


MALFORMED = [
    ("", "core segment is empty"),
    ("CQSbk4AQ*bk4", "'*' at character 9"),
    ("CQSbk4AQSbk4ANwAAAENAwCg", "needs"),  # cut inside the core segment
    (b64(core_bits(version=1)) + "." + DISCLOSED, "only version 2"),
    (b64(core_bits(lang="F" + chr(65 + 30))) + "." + DISCLOSED, "not a letter"),
    (b64(core_bits()), "vendorsDisclosed segment is mandatory"),
    (b64(core_bits(ss=0)) + "." + DISCLOSED, "isServiceSpecific must be true"),
    (b64(core_bits(pli="001" + "0" * 21)) + "." + DISCLOSED, "purposes [3]"),
    (b64(core_bits(cmp=1)) + "." + DISCLOSED, "cmpId"),
    (
        b64(core_bits(vendors=num(3, 16) + "1" + num(1, 12) + "1" + num(2, 16) + num(9, 16)))
        + "."
        + DISCLOSED,
        "bad id range 2..9 (max 3)",
    ),
    (
        b64(core_bits(vendors=num(3, 16) + "1" + num(1, 12) + "1" + num(5, 16) + num(4, 16)))
        + "."
        + DISCLOSED,
        "bad id range 5..4",
    ),
    (
        b64(core_bits(restrictions=num(1, 12) + num(2, 6) + num(3, 2) + num(0, 12)))
        + "."
        + DISCLOSED,
        "undefined RestrictionType 3",
    ),
    (b64(core_bits()) + "." + DISCLOSED + "." + DISCLOSED, "repeats the vendorsDisclosed"),
    (b64(core_bits()) + "." + b64(num(5, 3) + "0" * 21), "unknown SegmentType 5"),
    (b64(core_bits()) + "." + DISCLOSED + ".", "segment 3 is empty"),
    (b64(core_bits() + "0" * 40 + "1"), "unexpected data after the last field"),
    ("C" * 40_000, "longer than"),
]


@pytest.mark.parametrize(("text", "expected"), MALFORMED)
def test_malformed_strings_are_refused_with_a_precise_error(text: str, expected: str) -> None:
    with pytest.raises(MalformedString) as caught:
        tcf.decode(text)
    assert expected in caught.value.detail
    assert isinstance(caught.value, BadRequest) and caught.value.code == "malformed_tc_string"


def test_threat_a_short_string_expanding_to_millions_of_ids_is_refused_quickly() -> None:
    # Threat: 4,095 restriction entries of 1..65,535 each would expand to 268 million ids
    # (memory exhaustion from a 30 kB request); the shared id budget stops it.
    entry = "1" + num(1, 16) + num(65535, 16)
    restrictions = num(60, 12) + (num(2, 6) + num(0, 2) + num(60, 12) + entry * 60) * 60
    text = b64(core_bits(restrictions=restrictions)) + "." + DISCLOSED
    with pytest.raises(MalformedString, match="expands to more than"):
        tcf.decode(text)


def test_a_spoiled_segment_type_is_named() -> None:
    with pytest.raises(MalformedString, match="segment 2 has the unknown SegmentType 7"):
        tcf.decode(spoil(SPEC_EXAMPLE, 1, 0, "111"))


def test_lenient_decoding_reads_pre_v2_3_strings_that_strict_decoding_refuses() -> None:
    legacy = "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"  # GPP specification's example
    with pytest.raises(MalformedString, match="vendorsDisclosed"):
        tcf.decode(legacy)
    assert tcf.decode(legacy, strict=False).segments == ("core",)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"cmpVersion": 1}, "cmpId"),  # a required field missing
        ({"cmpId": 4096}, "cmpId"),  # more than 12 bits
        ({"cmpId": "300"}, "cmpId"),
        ({"consentLanguage": "E1"}, "consentLanguage"),
        ({"vendorConsents": [0]}, "vendorConsents"),
        ({"purposeConsents": [25]}, "purposeConsents"),
        ({"purposeLegitimateInterests": [4]}, "purposeLegitimateInterests"),
        (
            {"publisherRestrictions": [{"purposeId": 2, "restrictionType": 3, "vendorIds": []}]},
            "publisherRestrictions[0].restrictionType",
        ),
        ({"segments": ["core", "publisherTC"]}, "segments"),
        ({"segments": ["vendorsDisclosed", "core"]}, "segments"),
        ({"publisherCustomConsents": [3]}, "numCustomPurposes"),
        ({"created": "yesterday"}, "created"),
        ({"isServiceSpecific": False}, "isServiceSpecific"),
        ({"vendorConsent": [1]}, "vendorConsent"),  # a typo is named, not ignored
    ],
)
def test_unencodable_json_names_the_field(data: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {
        "cmpId": 300,
        "cmpVersion": 1,
        "vendorListVersion": 1,
        "created": "2025-01-01T00:00:00Z",
        "lastUpdated": 17_000_000_000,
    }
    base.update(data)
    if "cmpVersion" in data and "cmpId" not in data:
        del base["cmpId"]
    with pytest.raises(InvalidModel) as caught:
        tcf.encode(from_json(base))
    assert caught.value.field == field


ids = st.lists(st.integers(1, 600), max_size=40).map(lambda v: tuple(sorted(set(v))))
dense = st.integers(1, 300).flatmap(
    lambda n: st.lists(st.booleans(), min_size=n, max_size=n).map(
        lambda bits: tuple(i + 1 for i, on in enumerate(bits) if on)
    )
)
vendor_sets = st.one_of(ids, dense)
purposes = st.sets(st.integers(1, 24)).map(lambda v: tuple(sorted(v)))
li_purposes = st.sets(st.sampled_from([2, *range(7, 25)])).map(lambda v: tuple(sorted(v)))
letters = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)


@st.composite
def models(draw: st.DrawFn) -> TCModel:
    custom = draw(st.integers(0, 63))
    custom_ids = st.sets(st.integers(1, custom)) if custom else st.just(set[int]())
    segments = draw(
        st.sampled_from(
            [
                DEFAULT_SEGMENTS,
                ("core", "vendorsDisclosed"),
                ("core", "publisherTC", "vendorsDisclosed"),
                ("core", "vendorsDisclosed", "vendorsAllowed", "publisherTC"),
            ]
        )
    )
    if "publisherTC" not in segments:
        custom = 0
        custom_ids = st.just(set())
    restrictions = draw(
        st.lists(
            st.tuples(st.integers(0, 63), st.integers(0, 2), vendor_sets),
            max_size=4,
            unique_by=lambda r: (r[0], r[1]),
        )
    )
    return TCModel(
        cmp_id=draw(st.integers(2, 4095)),
        cmp_version=draw(st.integers(0, 4095)),
        vendor_list_version=draw(st.integers(0, 4095)),
        created=draw(st.integers(0, 2**36 - 1)),
        last_updated=draw(st.integers(0, 2**36 - 1)),
        consent_screen=draw(st.integers(0, 63)),
        consent_language=draw(letters),
        policy_version=draw(st.integers(0, 63)),
        use_non_standard_texts=draw(st.booleans()),
        purpose_one_treatment=draw(st.booleans()),
        publisher_country_code=draw(letters),
        special_feature_optins=draw(st.sets(st.integers(1, 12)).map(lambda v: tuple(sorted(v)))),
        purpose_consents=draw(purposes),
        purpose_legitimate_interests=draw(li_purposes),
        vendor_consents=draw(vendor_sets),
        vendor_legitimate_interests=draw(vendor_sets),
        publisher_restrictions=tuple(PurposeRestriction(p, t, v) for p, t, v in restrictions),
        vendors_disclosed=draw(vendor_sets),
        vendors_allowed=draw(vendor_sets) if "vendorsAllowed" in segments else (),
        publisher_consents=draw(purposes) if "publisherTC" in segments else (),
        publisher_legitimate_interests=draw(purposes) if "publisherTC" in segments else (),
        num_custom_purposes=custom,
        publisher_custom_consents=tuple(sorted(draw(custom_ids))),
        publisher_custom_legitimate_interests=tuple(sorted(draw(custom_ids))),
        segments=segments,
    )


@settings(max_examples=150, deadline=None)
@given(models(), st.sampled_from(["iabtcf", "iabgpp"]))
def test_property_encode_then_decode_gives_the_model_and_decode_then_encode_the_string(
    model: TCModel, choice: str
) -> None:
    restrictions = tuple(r for r in model.publisher_restrictions if r.vendor_ids)
    text = tcf.encode(model, choice=choice)  # type: ignore[arg-type]
    decoded = tcf.decode(text)
    expected = TCModel(
        **{**model.__dict__, "publisher_restrictions": decoded.publisher_restrictions}
    )
    assert decoded == expected
    assert {(r.purpose_id, r.restriction_type): r.vendor_ids for r in restrictions} == {
        (r.purpose_id, r.restriction_type): r.vendor_ids
        for r in decoded.publisher_restrictions
        if r.vendor_ids
    }
    assert tcf.encode(decoded, choice=choice) == text  # type: ignore[arg-type]
    assert tcf.encode(from_json(to_json(decoded)), choice=choice) == text  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~*", max_size=120
    )
)
def test_property_any_text_decodes_or_is_refused_with_a_typed_error(text: str) -> None:
    try:
        model = tcf.decode(text, strict=False)
    except MalformedString:
        return
    assert model.version == 2
