"""The codecs against IAB's reference JavaScript libraries, both ways, on generated models.

Strings the libraries write decode here to the same values and encode back byte for byte;
strings written here decode in the libraries to the same values. Each hypothesis example is a
batch of models so one node process serves many comparisons.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gateway.standards import gpp, gpp_tcfeuv2, tcf
from gateway.standards.tcf_model import from_json, iso, to_json
from gateway.standards.us_sections import US_SECTIONS
from tests.iab_reference import ok, reference, require_node
from tests.test_standards_gpp import section_values
from tests.test_standards_tcf import SPEC_EXAMPLE

LANGUAGES = [
    "EN",
    "FR",
    "DE",
    "ES",
    "IT",
    "NL",
    "PL",
    "PT",
    "SV",
    "FI",
    "DA",
    "CS",
    "EL",
    "HU",
    "RO",
    "BG",
    "HR",
    "LT",
    "LV",
    "ET",
    "SK",
    "SL",
    "MT",
    "NO",
    "JA",
    "ZH",
]
# A batch's repr is large and shrinking it through node is slow: no shrinking; a failure's
# assertion message names the one string that differs.
BATCH = settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.data_too_large, HealthCheck.too_slow],
)


def id_list(max_id: int, max_size: int = 40) -> st.SearchStrategy[list[int]]:
    sparse = st.lists(st.integers(1, max_id), max_size=max_size)
    runs = st.lists(st.tuples(st.integers(1, max_id), st.integers(0, 30)), max_size=6).map(
        lambda pairs: [i for start, n in pairs for i in range(start, min(start + n, max_id) + 1)]
    )
    dense = st.lists(st.booleans(), max_size=max_id).map(
        lambda bits: [i + 1 for i, on in enumerate(bits) if on]
    )
    return st.one_of(sparse, runs, dense).map(lambda ids: sorted(set(ids)))


@st.composite
def tc_json(draw: st.DrawFn) -> dict[str, Any]:
    """A TCModel the reference library accepts as is (its own checks and GVL filters)."""
    moment = draw(st.integers(15_000_000_000, 20_000_000_000)) * 100  # milliseconds
    restrictions = []
    for purpose, kind in draw(
        st.lists(st.tuples(st.integers(1, 11), st.integers(0, 2)), max_size=4, unique=True)
    ):
        vendors = draw(id_list(300, 12))
        if vendors and not (purpose == 1 and kind != 0):  # purpose 1 is never flexible
            restrictions.append(
                {"purposeId": purpose, "restrictionType": kind, "vendorIds": vendors}
            )
    custom = draw(st.integers(0, 10))
    return {
        "cmpId": draw(st.integers(2, 4095)),
        "cmpVersion": draw(st.integers(0, 4095)),
        "consentScreen": draw(st.integers(0, 63)),
        "consentLanguage": draw(st.sampled_from(LANGUAGES)),
        "vendorListVersion": draw(st.integers(1, 4095)),
        "policyVersion": draw(st.integers(2, 5)),
        "useNonStandardTexts": draw(st.booleans()),
        "purposeOneTreatment": draw(st.booleans()),
        "publisherCountryCode": draw(st.sampled_from(["DE", "FR", "AA", "GB", "ZZ"])),
        "created": _iso(moment),
        "lastUpdated": _iso(moment + draw(st.integers(0, 10**9)) * 100),
        "specialFeatureOptins": draw(id_list(12)),
        "purposeConsents": draw(id_list(24)),
        "purposeLegitimateInterests": [p for p in draw(id_list(24)) if p not in (1, 3, 4, 5, 6)],
        "vendorConsents": draw(id_list(400)),
        "vendorLegitimateInterests": draw(id_list(400)),
        "publisherRestrictions": restrictions,
        "vendorsDisclosed": draw(id_list(400)),
        "publisherConsents": draw(id_list(24)),
        "publisherLegitimateInterests": draw(id_list(24)),
        "numCustomPurposes": custom,
        "publisherCustomConsents": draw(id_list(custom)) if custom else [],
        "publisherCustomLegitimateInterests": draw(id_list(custom)) if custom else [],
    }


def _iso(millis: int) -> str:
    return iso(millis // 100)


def comparable(data: dict[str, Any]) -> dict[str, Any]:
    """Decoded TCModel values without what the library does not report (segment order)."""
    out = {
        k: v
        for k, v in data.items()
        if k not in ("segments", "version", "isServiceSpecific", "vendorsAllowed")
    }
    out["publisherRestrictions"] = sorted(
        (r["purposeId"], r["restrictionType"], tuple(r["vendorIds"]))
        for r in data["publisherRestrictions"]
    )
    return out


def test_the_specification_example_decodes_as_the_reference_library_decodes_it() -> None:
    [answer] = reference([{"op": "tcf_decode", "string": SPEC_EXAMPLE}])
    assert comparable(ok(answer)) == comparable(to_json(tcf.decode(SPEC_EXAMPLE)))


@BATCH
@given(st.lists(tc_json(), min_size=25, max_size=25))
def test_tc_strings_from_iabtcf_decode_to_their_model_and_encode_back_byte_for_byte(
    models: list[dict[str, Any]],
) -> None:
    answers = reference([{"op": "tcf_encode", "model": m} for m in models])
    for model, answer in zip(models, answers, strict=True):
        text = ok(answer)
        decoded = to_json(tcf.decode(text))
        assert comparable(decoded) == comparable(
            {**model, "publisherRestrictions": [r for r in model["publisherRestrictions"]]}
        ), text
        assert tcf.encode(from_json(decoded)) == text


@BATCH
@given(st.lists(tc_json(), min_size=25, max_size=25))
def test_tc_strings_encoded_here_decode_in_iabtcf_to_the_same_model(
    models: list[dict[str, Any]],
) -> None:
    texts = [tcf.encode(from_json(m)) for m in models]
    answers = reference([{"op": "tcf_decode", "string": t} for t in texts])
    for model, text, answer in zip(models, texts, answers, strict=True):
        theirs = ok(answer)
        assert theirs["version"] == 2 and theirs["isServiceSpecific"] is True
        assert comparable(theirs) == comparable({**model, "version": 2}), text


@st.composite
def gpp_json(draw: st.DrawFn) -> dict[str, Any]:
    """Sections as iabgpp names them, with values its validators accept."""
    chosen = draw(
        st.lists(st.sampled_from(US_SECTIONS), min_size=1, max_size=5, unique_by=lambda s: s.id)
    )
    data: dict[str, Any] = {}
    for section in chosen:
        data[section.name] = draw(section_values(section, section.current))
    if draw(st.booleans()):
        data["uspv1"] = {
            k: draw(st.sampled_from("YN-")) for k in ("Notice", "OptOutSale", "LspaCovered")
        }
    if draw(st.booleans()):
        tc = draw(tc_json())
        tc["lastUpdated"] = tc["created"]  # iabgpp stamps both with the same date
        data["tcfeuv2"] = gpp_tcfeuv2_json(tc)
    return data


def gpp_tcfeuv2_json(tc: dict[str, Any]) -> dict[str, Any]:
    return gpp_tcfeuv2.to_json(from_json(tc))


INCLUDED = ("GpcSegmentIncluded", "SensitiveDataConsentSegmentIncluded")


def without_flags(data: dict[str, Any]) -> dict[str, Any]:
    """What iabgpp's toObject reports: no *SegmentIncluded flags, and a section without its
    GPC subsection still shows ``Gpc: false``."""
    return {
        name: {k: v for k, v in fields.items() if k not in INCLUDED}
        for name, fields in data.items()
    }


@BATCH
@given(st.lists(gpp_json(), min_size=25, max_size=25))
def test_gpp_strings_from_iabgpp_decode_to_their_fields_and_encode_back_byte_for_byte(
    models: list[dict[str, Any]],
) -> None:
    answers = reference([{"op": "gpp_encode", "sections": m} for m in models])
    for model, answer in zip(models, answers, strict=True):
        text = ok(answer)
        decoded = gpp.decode(text)
        for name, fields in model.items():
            for field, value in fields.items():
                if field == "Gpc" and not fields["GpcSegmentIncluded"]:
                    continue  # the library drops GPC with its subsection
                if field == "SensitiveDataProcessing" and not fields.get(
                    "SensitiveDataConsentSegmentIncluded", True
                ):
                    continue
                assert decoded[name][field] == value, (text, name, field)
        assert gpp.encode(decoded) == text


@BATCH
@given(st.lists(gpp_json(), min_size=25, max_size=25))
def test_gpp_strings_encoded_here_decode_in_iabgpp_to_the_same_fields(
    models: list[dict[str, Any]],
) -> None:
    texts = [gpp.encode(m) for m in models]
    answers = reference([{"op": "gpp_decode", "string": t} for t in texts])
    for text, answer in zip(texts, answers, strict=True):
        assert ok(answer) == without_flags(gpp.decode(text)), text


def test_node_is_there_when_ci_says_so() -> None:
    # Under CI=true a missing node or npm install fails here instead of skipping silently.
    assert require_node()
