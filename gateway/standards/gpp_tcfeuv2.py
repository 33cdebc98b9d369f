"""GPP section 2, ``tcfeuv2``: a TC string inside a GPP string, under @iabgpp/cmpapi's names.

The bits are the TC string's (``tcf``); only the names differ (``PurposeConsents`` as 24
booleans rather than a set of ids) and the reference library's habits: it always writes the
Core, DisclosedVendors and PublisherTC segments, and picks range or bitfield encoding for a
vendor set by its own rule (a range when it is no longer than the bitfield).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.standards import tcf, tcf_model
from gateway.standards.errors import InvalidModel

# (iabgpp name, iabtcf name, representation): "same"; "bools N": a fixed bitfield of N
# booleans for a set of ids; "const N": a segment type that must be N; "restrictions".
_NAMES: tuple[tuple[str, str, str], ...] = (
    ("Version", "version", "same"),
    ("Created", "created", "same"),
    ("LastUpdated", "lastUpdated", "same"),
    ("CmpId", "cmpId", "same"),
    ("CmpVersion", "cmpVersion", "same"),
    ("ConsentScreen", "consentScreen", "same"),
    ("ConsentLanguage", "consentLanguage", "same"),
    ("VendorListVersion", "vendorListVersion", "same"),
    ("PolicyVersion", "policyVersion", "same"),
    ("IsServiceSpecific", "isServiceSpecific", "same"),
    ("UseNonStandardStacks", "useNonStandardTexts", "same"),
    ("SpecialFeatureOptins", "specialFeatureOptins", "bools 12"),
    ("PurposeConsents", "purposeConsents", "bools 24"),
    ("PurposeLegitimateInterests", "purposeLegitimateInterests", "bools 24"),
    ("PurposeOneTreatment", "purposeOneTreatment", "same"),
    ("PublisherCountryCode", "publisherCountryCode", "same"),
    ("VendorConsents", "vendorConsents", "same"),
    ("VendorLegitimateInterests", "vendorLegitimateInterests", "same"),
    ("PublisherRestrictions", "publisherRestrictions", "restrictions"),
    ("PublisherPurposesSegmentType", "", "const 3"),
    ("PublisherConsents", "publisherConsents", "bools 24"),
    ("PublisherLegitimateInterests", "publisherLegitimateInterests", "bools 24"),
    ("NumCustomPurposes", "numCustomPurposes", "same"),
    ("PublisherCustomConsents", "publisherCustomConsents", "bools custom"),
    ("PublisherCustomLegitimateInterests", "publisherCustomLegitimateInterests", "bools custom"),
    ("VendorsAllowedSegmentType", "", "const 2"),
    ("VendorsAllowed", "vendorsAllowed", "same"),
    ("VendorsDisclosedSegmentType", "", "const 1"),
    ("VendorsDisclosed", "vendorsDisclosed", "same"),
)
_GPP_NAME = {tc_name: name for name, tc_name, _ in _NAMES if tc_name}


def to_json(model: tcf_model.TCModel) -> dict[str, Any]:
    """The model under iabgpp's ``tcfeuv2`` field names."""
    tc = tcf_model.to_json(model)
    out: dict[str, Any] = {}
    for name, tc_name, kind in _NAMES:
        if kind.startswith("const"):
            out[name] = int(kind.split()[1])
        elif kind == "restrictions":
            out[name] = [
                {"key": r["purposeId"], "type": r["restrictionType"], "ids": r["vendorIds"]}
                for r in tc[tc_name]
            ]
        elif kind.startswith("bools"):
            size = kind.split()[1]
            count = tc["numCustomPurposes"] if size == "custom" else int(size)
            ids = set(tc[tc_name])
            out[name] = [i + 1 in ids for i in range(count)]
        else:
            out[name] = tc[tc_name]
    return out


def _fail(name: str, detail: str) -> InvalidModel:
    return InvalidModel("gpp", f"tcfeuv2.{name}", detail)


def from_json(data: Mapping[str, Any]) -> tcf_model.TCModel:
    """A model from iabgpp-named fields; unknown names and wrong values are ``InvalidModel``."""
    known = {name for name, _, _ in _NAMES}
    for key in data:
        if key not in known:
            raise _fail(str(key), "not a tcfeuv2 field")
    tc: dict[str, Any] = {"segments": list(tcf_model.DEFAULT_SEGMENTS)}
    for name, tc_name, kind in _NAMES:
        if name not in data:
            continue
        value = data[name]
        if kind.startswith("const"):
            if value != int(kind.split()[1]):
                raise _fail(name, f"must be {kind.split()[1]}")
        elif kind == "restrictions":
            if not isinstance(value, list) or not all(
                isinstance(r, dict) and set(r) == {"key", "type", "ids"} for r in value
            ):
                raise _fail(name, "expected a list of {key, type, ids}")
            tc[tc_name] = [
                {"purposeId": r["key"], "restrictionType": r["type"], "vendorIds": r["ids"]}
                for r in value
            ]
        elif kind.startswith("bools"):
            if not isinstance(value, list) or not all(isinstance(v, bool) for v in value):
                raise _fail(name, "expected a list of true/false")
            tc[tc_name] = [i + 1 for i, on in enumerate(value) if on]
        else:
            tc[tc_name] = value
    tc.setdefault("cmpVersion", 0)
    tc.setdefault("vendorListVersion", 0)
    try:
        return tcf_model.from_json(tc)
    except InvalidModel as exc:
        field = exc.field.split("[")[0].split(".")[0]
        raise _fail(_GPP_NAME.get(field, field), exc.detail.split(": ", 1)[-1]) from None


def decode(text: str, *, strict: bool) -> dict[str, Any]:
    return to_json(tcf.decode(text, strict=strict))


def encode(data: Mapping[str, Any]) -> str:
    model = from_json(data)
    problem = tcf_model.conformance_problem(model)
    if problem is not None:
        raise _fail(_GPP_NAME.get(problem[0], problem[0]), problem[1])
    return tcf.encode(model, choice="iabgpp")
