"""The TC and GPP strings of a consent record: issued from the choice, or checked against it.

A record sent without strings (the snippet's) gets the strings its choice gives where the
site's ``[tcf]``/``[gpp]`` apply to the visitor (the site bundle's ``issuing.Issuer``). A
record that carries ``tc_string`` / ``gpp_string`` (an app with its own CMP screen) is
accepted only when they say what the choice says; anything else is a 422 naming the field
and the bit:

- ``malformed_tc_string`` / ``malformed_gpp_string``: not a valid TCF v2.3 / GPP string;
- ``tc_string_not_expected`` / ``gpp_section_not_expected``: TCF (that section) does not
  apply to this site and visitor, or the site issues no TC strings (no registered CMP id);
- ``tc_string_cmp_mismatch``: issued under another CMP id than the site's;
- ``tc_string_unknown_vendor_list``: a vendor list version newer than the imported one;
- ``tc_string_unknown_vendor``: consent or legitimate interest for a vendor the site does not
  work with;
- ``tc_string_contradicts_choice``: a purpose or special feature bit that the choice does not
  give (a consent bit of a mapped purpose must match the choice exactly, purpose 1 included;
  legitimate interest may be less, after an objection, never more);
- ``gpp_string_contradicts_choice``: a US section's opt-out (sale, sharing, targeted ads) or
  GPC flag that differs from the choice and the request's GPC signal.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from gateway.core.errors import BadRequest
from gateway.core.model import Region, Site
from gateway.standards import gpp, gpp_tcfeuv2, tcf
from gateway.standards.errors import InvalidModel, MalformedString
from gateway.standards.issuing import Applicable, Issued, Issuer, applicable, tc_model, usnat
from gateway.standards.tcf_model import TCModel, to_json

MAX_STRING = 8192  # a site's own vendors fit many times over; the body limit bounds it anyway
_US_OPT_OUTS = ("SaleOptOut", "SharingOptOut", "TargetedAdvertisingOptOut")


def _reject(code: str, message: str, field: str) -> BadRequest:
    return BadRequest(code, message, field=field, status_code=422)


def _text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_STRING:
        raise BadRequest(
            "invalid_field", f"{name} must be a string of 1-{MAX_STRING} characters", field=name
        )
    return value


def _differs(label: str, got: tuple[int, ...], want: tuple[int, ...], exact: bool) -> str | None:
    extra = sorted(set(got) - set(want))
    if extra:
        return f"{label} {extra[0]} is set, but the choice does not give it"
    missing = sorted(set(want) - set(got))
    if exact and missing:
        return f"{label} {missing[0]} is not set, but the choice gives it"
    return None


def check_model(
    model: TCModel, expected: TCModel, site_vendors: tuple[int, ...], field: str
) -> None:
    """A decoded TC string against the model the same choice gives on this site."""
    if model.cmp_id != expected.cmp_id:
        raise _reject(
            "tc_string_cmp_mismatch",
            f"CMP id {model.cmp_id} is not the site's ({expected.cmp_id})",
            f"{field}.cmpId",
        )
    if model.vendor_list_version > expected.vendor_list_version:
        raise _reject(
            "tc_string_unknown_vendor_list",
            f"vendor list version {model.vendor_list_version} is newer than the imported "
            f"{expected.vendor_list_version}",
            f"{field}.vendorListVersion",
        )
    vendors = set(site_vendors)
    for name, ids in (
        ("vendorConsents", model.vendor_consents),
        ("vendorLegitimateInterests", model.vendor_legitimate_interests),
    ):
        unknown = sorted(set(ids) - vendors)
        if unknown:
            raise _reject(
                "tc_string_unknown_vendor",
                f"vendor {unknown[0]} is not one the site works with ([tcf] vendors)",
                f"{field}.{name}",
            )
    for name, label, got, want, exact in (
        ("purposeConsents", "consent for purpose", model.purpose_consents,
         expected.purpose_consents, True),
        ("purposeLegitimateInterests", "legitimate interest for purpose",
         model.purpose_legitimate_interests, expected.purpose_legitimate_interests, False),
        ("specialFeatureOptins", "special feature", model.special_feature_optins,
         expected.special_feature_optins, True),
    ):  # fmt: skip
        problem = _differs(label, got, want, exact)
        if problem:
            raise _reject("tc_string_contradicts_choice", problem, f"{field}.{name}")


def _us_section(name: str, fields: Mapping[str, Any], want: Mapping[str, Any], gpc: bool) -> None:
    for key in _US_OPT_OUTS:
        if key in fields and key in want and fields[key] != want[key]:
            raise _reject(
                "gpp_string_contradicts_choice",
                f"{name}.{key} is {fields[key]}, but the choice gives {want[key]} "
                "(1 opted out, 2 did not, 0 not applicable)",
                f"gpp_string.{name}.{key}",
            )
    if gpc and fields.get("GpcSegmentIncluded") and not fields.get("Gpc"):
        raise _reject(
            "gpp_string_contradicts_choice",
            f"{name}.Gpc is not set, but the request signalled GPC",
            f"gpp_string.{name}.Gpc",
        )


def record_signals(
    body: Mapping[str, Any],
    issuer: Issuer,
    rule_id: str,
    region: Region,
    gpc: bool,
    choices: Mapping[str, bool],
    language: str,
    now_deciseconds: int,
) -> Issued | None:
    """The strings a record carries: checked when the body has them, else issued; None when
    neither TCF nor GPP applies and none were sent. ``issuer`` is the site bundle's."""
    site, gvl = issuer.site, issuer.gvl
    tc_text, gpp_text = _text(body, "tc_string"), _text(body, "gpp_string")
    applies = applicable(site, gvl, rule_id, region)
    if tc_text is None and gpp_text is None:
        if not applies.any:
            return None
        return issuer.issue(applies, choices, gpc, language, now_deciseconds)
    expected = None
    if applies.tcf and site.tcf is not None and gvl is not None:
        expected = tc_model(site.tcf, gvl, choices, language, now_deciseconds)
    vendors = site.tcf.vendors if site.tcf is not None else ()
    if tc_text is not None:
        if expected is None:
            raise _reject(
                "tc_string_not_expected",
                f"TCF does not apply under rule {rule_id} on site {site.id}, or the site has no "
                "registered CMP id ([tcf] cmp_id)",
                "tc_string",
            )
        check_model(_decoded(_tc, tc_text, "tc"), expected, vendors, "tc_string")
    if gpp_text is not None:
        _check_gpp(gpp_text, applies, expected, vendors, site, choices, gpc)
    return Issued(tc_text, gpp_text, None, None)


@functools.lru_cache(maxsize=2048)
def _tc(text: str) -> TCModel:
    """Decoded TC strings, remembered: visitors with the same choice send the same string."""
    return tcf.decode(text)


@functools.lru_cache(maxsize=2048)
def _gpp(text: str) -> tuple[Mapping[str, Any], TCModel | None]:
    """A decoded GPP string and its tcfeuv2 section as a model (shared: never change them)."""
    decoded = gpp.decode(text)
    section = decoded.get("tcfeuv2")
    return decoded, None if section is None else gpp_tcfeuv2.from_json(section)


def _decoded(decode: Any, text: str, kind: str) -> Any:
    try:
        return decode(text)
    except (MalformedString, InvalidModel) as exc:  # a 422 here: well-formed JSON, bad content
        raise _reject(f"malformed_{kind}_string", exc.message, f"{kind}_string") from None


def _check_gpp(
    text: str,
    applies: Applicable,
    expected: TCModel | None,
    vendors: tuple[int, ...],
    site: Site,
    choices: Mapping[str, bool],
    gpc: bool,
) -> None:
    decoded, tc_section = _decoded(_gpp, text, "gpp")
    for name, fields in decoded.items():
        if name == "header":
            continue
        if name == "tcfeuv2":
            if expected is None:
                raise _reject(
                    "gpp_section_not_expected",
                    "tcfeuv2: TCF does not apply to this visitor on this site",
                    "gpp_string.tcfeuv2",
                )
            check_model(tc_section, expected, vendors, "gpp_string.tcfeuv2")
        elif name in gpp.SECTION_IDS and name not in ("uspv1",):
            if site.gpp is None:
                raise _reject(
                    "gpp_section_not_expected", f"{name}: the site has no [gpp]", "gpp_string"
                )
            want = usnat(site, site.gpp, choices, gpc)
            _us_section(name, fields, want, gpc)
    if not applies.gpp_sections and site.gpp is None:
        raise _reject("gpp_section_not_expected", "the site has no [gpp]", "gpp_string")


def explain(signals: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What a stored record's strings say, for a proof pack: the TC string as iabtcf TCModel
    JSON, the GPP string as iabgpp sections (read leniently: proof shows what was stored)."""
    if not signals or not ("tc_string" in signals or "gpp_string" in signals):
        return None
    out: dict[str, Any] = {}
    for name in ("tc_string", "gpp_string"):
        text = signals.get(name)
        if isinstance(text, str):
            try:
                out[name] = (
                    to_json(tcf.decode(text, strict=False))
                    if name == "tc_string"
                    else gpp.decode(text, strict=False)
                )
            except (MalformedString, InvalidModel) as exc:
                out[name] = {"error": exc.message}
    return out
