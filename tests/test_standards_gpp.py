"""GPP strings: the specification's Fibonacci table and header examples, the US sections,
hostile strings, and property-based round trips (reference library: test_standards_reference)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.standards import gpp
from gateway.standards.bits import fibonacci_bits
from gateway.standards.errors import InvalidModel, MalformedString
from gateway.standards.us_sections import US_SECTIONS, UsSection

# Core/Consent String Specification.md, "About Fibonacci Encoding".
FIBONACCI_TABLE = {1: "11", 2: "011", 3: "0011", 4: "1011", 5: "00011", 6: "10011", 7: "01011"}


@pytest.mark.parametrize(("value", "bits"), FIBONACCI_TABLE.items())
def test_fibonacci_codes_match_the_specification_table(value: int, bits: str) -> None:
    assert fibonacci_bits(value) == bits


# The same document's "Header Examples" and "GPP String Examples".
@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("DBABM~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA", [2]),
        ("DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN", [2, 6]),
        ("DBACNYA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN", [2, 6]),
    ],
)
def test_specification_examples_decode(text: str, ids: list[int]) -> None:
    # The examples carry a TCF v2.2 string (no DisclosedVendors): only lenient decoding reads it.
    with pytest.raises(MalformedString, match="vendorsDisclosed"):
        gpp.decode(text)
    data = gpp.decode(text, strict=False)
    assert data["header"] == {"Id": 3, "Version": 1, "SectionIds": ids}
    assert data["tcfeuv2"]["Version"] == 2 and data["tcfeuv2"]["IsServiceSpecific"] is True
    if 6 in ids:
        assert data["uspv1"] == {"Version": 1, "Notice": "Y", "OptOutSale": "N", "LspaCovered": "N"}


def test_header_example_3_names_the_unsupported_canadian_section() -> None:
    with pytest.raises(MalformedString, match="section id 5 is not supported: tcfcav1"):
        gpp.decode("DBABjw~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN")


def test_header_bits_as_the_specification_spells_them() -> None:
    encoded = gpp.encode({"usnat": {}, "usca": {}})
    header = encoded.split("~")[0]
    # Type 3, Version 1, 1 entry: a group (1) starting at 7 (01011), length 1 (11).
    bits = "000011" + "000001" + "000000000001" + "1" + "01011" + "11"
    bits += "0" * (-len(bits) % 8)
    bits += "0" * (-len(bits) % 6)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert header == "".join(alphabet[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def test_usnat_version_1_example_with_the_gpc_subsection_round_trips() -> None:
    text = "DBABLA~BVQqAAAAAgA.QA"  # the usnat v1 string the MSPA guidance uses
    data = gpp.decode(text)
    usnat = data["usnat"]
    assert usnat["Version"] == 1
    assert usnat["SaleOptOut"] == 2 and usnat["SharingOptOutNotice"] == 1
    assert len(usnat["SensitiveDataProcessing"]) == 12
    assert usnat["GpcSegmentIncluded"] is True and usnat["Gpc"] is False
    assert gpp.encode(data) == text


def test_usnat_with_gpc_on_sets_the_gpc_subsection() -> None:
    text = gpp.encode({"usnat": {"SaleOptOutNotice": 1, "SaleOptOut": 1, "Gpc": True}})
    assert text.split("~")[1].split(".")[1] == "YA"  # SubsectionType 1 (01), Gpc 1
    data = gpp.decode(text)["usnat"]
    assert data["Gpc"] is True and data["SaleOptOut"] == 1 and data["Version"] == 2


def test_a_section_without_its_gpc_subsection_round_trips_without_it() -> None:
    text = gpp.encode({"usca": {"GpcSegmentIncluded": False}})
    assert "." not in text
    assert gpp.decode(text)["usca"]["GpcSegmentIncluded"] is False
    assert gpp.encode(gpp.decode(text)) == text


def test_uspv1_is_read_and_written_as_four_characters() -> None:
    text = gpp.encode({"uspv1": {"Notice": "Y", "OptOutSale": "N", "LspaCovered": "-"}})
    assert text.endswith("~1YN-")
    assert gpp.decode(text)["uspv1"]["OptOutSale"] == "N"


MALFORMED = [
    ("", "header is empty"),
    ("DBABM", "lists 1 section(s) but 0 follow"),
    ("DBAA~BVQqAAAAAgA", "lists 0 section(s) but 1 follow"),
    ("CBABLA~BVQqAAAAAgA", "Type is 2"),
    ("DCABLA~BVQqAAAAAgA", "Version is 2"),
    ("DBABLA~BVQ?AAAAAgA", "'?' at character 4"),
    ("DBABLA~DVQqAAAAAgA", "Version 3 is not a known usnat version"),
    ("DBABLA~BVQqAAAAAgA.QA.QA", "2 subsections"),
    ("DBABLA~BVQqAAAAAgA.gA", "SubsectionType is 2"),
    ("DBABLA~BVQqAAAAAgA.", "GPC subsection is empty"),
    ("DBABLA~BVQq", "needs"),
    ("DBABLA~B__qAAAAAgA", "the specification allows 0..2"),
    ("DBABLA~BVQqAAAAAgB_", "unexpected data after the last field"),
    ("DBABTA~1YNX", "not version 1 followed by three of Y, N or -"),
    ("DBABRYA~BVQqAAAAAgA", "section id 30 is not supported: not in the GPP section registry"),
    ("DBABWA~BVQqAAAAAgA", "section id 4 is not supported: signal integrity"),
    ("DBABYA~BVQqAAAAAgA", "section id 1 is not supported: tcfeuv1"),
    ("DBACNY~~1YNN", "is empty"),
    ("DBABLA~" + "A" * 40_000, "longer than"),
]


@pytest.mark.parametrize(("text", "expected"), MALFORMED)
def test_malformed_strings_are_refused_with_a_precise_error(text: str, expected: str) -> None:
    with pytest.raises(MalformedString) as caught:
        gpp.decode(text)
    assert expected in caught.value.detail
    assert caught.value.code == "malformed_gpp_string"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], "(top level)"),
        ({"usxx": {}}, "usxx"),
        ({"usnat": {"SaleOptOut": 3}}, "usnat.SaleOptOut"),
        ({"usnat": {"MspaCoveredTransaction": 0}}, "usnat.MspaCoveredTransaction"),
        ({"usnat": {"SensitiveDataProcessing": [0] * 12}}, "usnat.SensitiveDataProcessing"),
        ({"usnat": {"Version": 3}}, "usnat.Version"),
        ({"usnat": {"Gpc": "yes"}}, "usnat.Gpc"),
        ({"usva": {"Gpc": True}}, "usva.Gpc"),  # Virginia has no GPC subsection
        ({"usnat": {"SaleOptOutt": 1}}, "usnat.SaleOptOutt"),
        ({"uspv1": {"Notice": "X"}}, "uspv1"),
        ({"tcfeuv2": {"CmpId": 300}}, "tcfeuv2.Created"),
        ({"header": {"SectionIds": [8]}, "usnat": {}}, "header"),
    ],
)
def test_unencodable_json_names_the_field(data: Any, field: str) -> None:
    with pytest.raises(InvalidModel) as caught:
        gpp.encode(data)
    assert caught.value.field == field


def section_values(section: UsSection, version: int) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name, bits, count, low, high in section.layouts[version]:
        value = (
            st.integers(low, high)
            if name not in ("Version", "MspaVersion")
            else (st.just(version) if name == "Version" else st.integers(0, 63))
        )
        fields[name] = st.lists(value, min_size=count, max_size=count) if count else value
        assert bits in (2, 6)
    if section.subsection == "gpc":
        fields["GpcSegmentIncluded"] = st.booleans()
        fields["Gpc"] = st.booleans()
    elif section.subsection == "sensitive":
        fields["SensitiveDataConsentSegmentIncluded"] = st.booleans()
        fields["SensitiveDataProcessing"] = st.lists(st.integers(0, 2), min_size=8, max_size=8)
    return st.fixed_dictionaries(fields)


@st.composite
def gpp_models(draw: st.DrawFn) -> dict[str, Any]:
    chosen = draw(
        st.lists(st.sampled_from(US_SECTIONS), min_size=1, max_size=4, unique_by=lambda s: s.id)
    )
    data: dict[str, Any] = {}
    for section in chosen:
        version = draw(st.sampled_from(sorted(section.layouts)))
        data[section.name] = draw(section_values(section, version))
    if draw(st.booleans()):
        data["uspv1"] = {
            k: draw(st.sampled_from("YN-")) for k in ("Notice", "OptOutSale", "LspaCovered")
        }
    return data


@settings(max_examples=150, deadline=None)
@given(gpp_models())
def test_property_encode_decode_encode_is_stable_and_keeps_every_value(
    data: dict[str, Any],
) -> None:
    text = gpp.encode(data)
    decoded = gpp.decode(text)
    for name, fields in data.items():
        for field, value in fields.items():
            if field == "Gpc" and not fields.get("GpcSegmentIncluded", True):
                assert decoded[name][field] is False  # no subsection: GPC not signalled
            elif field == "SensitiveDataProcessing" and not fields.get(
                "SensitiveDataConsentSegmentIncluded", True
            ):
                assert decoded[name][field] == [0] * 8
            else:
                assert decoded[name][field] == value, (name, field)
    assert gpp.encode(decoded) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ABCDLQYabcdz01-_.~", max_size=60))
def test_property_any_text_decodes_or_is_refused_with_a_typed_error(text: str) -> None:
    try:
        data = gpp.decode(text)
    except MalformedString:
        return
    assert data["header"]["Id"] == 3
