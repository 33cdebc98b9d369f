"""Issuing and checking TC/GPP strings as plain values: the choice → bits mapping, property-based
agreement between issuing and checking, hostile strings, and what proof packs show."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.errors import BadRequest
from gateway.core.iab import GppSettings, TcfRestriction, TcfSettings
from gateway.core.model import Region, Site
from gateway.sites.sitefile import read_site
from gateway.standards import gpp, issuing, tcf
from gateway.standards.gvl import parse
from gateway.standards.issuing import Issuer
from gateway.standards.record_check import explain, record_signals
from tests.helpers import ROOT
from tests.iab_site import GVL_FILE

GVL = parse(GVL_FILE.read_bytes())
TCF = TcfSettings(
    cmp_id=300,
    publisher_country="DE",
    vendors=(28, 755, 793, 1126),
    consent={"marketing": (1, 2, 3, 4, 7), "analytics": (1, 8, 9), "personalization": (1, 5, 6)},
    legitimate_interest={"analytics": (9, 10), "marketing": (2, 7)},
    special_features={"marketing": (1,)},
    restrictions=(TcfRestriction(2, 1, (755,)),),
)
SITE = dataclasses.replace(read_site(ROOT / "banners" / "demo"), tcf=TCF, gpp=GppSettings())
NOW = 17_650_000_000  # deciseconds: 2025-12-08
OPTIONAL = ("analytics", "marketing", "personalization")
choices_st = st.fixed_dictionaries({p: st.booleans() for p in OPTIONAL}).map(
    lambda c: {"necessary": True, **c}
)


def _issue(
    site: Site, choices: dict[str, bool], region: Region, rule: str, gpc: bool = False
) -> issuing.Issued:
    applies = issuing.applicable(site, GVL, rule, region)
    return issuing.Issuer(site, GVL).issue(applies, choices, gpc, "de", NOW)


def test_purposes_and_vendors_follow_the_choice() -> None:
    issued = _issue(
        SITE,
        {"necessary": True, "analytics": True, "marketing": False, "personalization": False},
        Region("DE"),
        "gdpr",
    )
    assert issued.tc_string is not None
    model = tcf.decode(issued.tc_string)
    assert model.purpose_consents == (1, 8, 9)
    assert model.purpose_legitimate_interests == (9, 10)
    assert model.special_feature_optins == ()
    assert model.vendors_disclosed == (28, 755, 793)  # 1126 is deleted from the vendor list
    assert model.vendor_consents == (28, 755, 793)  # each declares purpose 1
    assert model.vendor_legitimate_interests == (28, 755, 793)
    assert model.consent_language == "DE" and model.publisher_country_code == "DE"
    assert model.created == model.last_updated and model.created % issuing.DAY_DECISECONDS == 0
    assert [
        (r.purpose_id, r.restriction_type, r.vendor_ids) for r in model.publisher_restrictions
    ] == [(2, 1, (755,))]
    # The GPP string's tcfeuv2 section is the same TC string.
    assert issued.gpp_string == "DBABMA~" + issued.tc_string


def test_legitimate_interest_never_covers_purposes_1_and_3_to_6() -> None:
    site = dataclasses.replace(
        SITE, tcf=dataclasses.replace(TCF, legitimate_interest={"analytics": (1, 3, 4, 5, 6, 10)})
    )
    issued = _issue(
        site,
        {"necessary": True, "analytics": True, "marketing": True, "personalization": True},
        Region("FR"),
        "gdpr",
    )
    assert issued.tc_string is not None
    assert tcf.decode(issued.tc_string).purpose_legitimate_interests == (10,)


def test_no_registered_cmp_id_no_tc_string() -> None:
    site = dataclasses.replace(SITE, tcf=dataclasses.replace(TCF, cmp_id=0), gpp=None)
    applies = issuing.applicable(site, GVL, "gdpr", Region("DE"))
    assert applies == issuing.NOTHING
    assert issuing.gpp_cmp_id(site) == 1


@pytest.mark.parametrize(
    ("regions", "region", "sections"),
    [
        ({}, Region("US", "CA"), ("usnat",)),
        ({}, Region("DE"), ("tcfeuv2",)),
        ({}, Region("JP"), ()),  # tcfeuv2 is the default only where TCF applies
        ({"US-FL": ()}, Region("US", "FL"), ()),
        ({"US": ("usnat",), "DE": ()}, Region("DE"), ()),
        ({"CA": ("usnat",)}, Region("CA", "QC"), ("usnat",)),
    ],
)
def test_gpp_sections_per_region(
    regions: dict[str, tuple[str, ...]], region: Region, sections: tuple[str, ...]
) -> None:
    tcf_on = region.country == "DE"
    assert issuing.gpp_sections(GppSettings(regions=regions), region, tcf_on) == sections


def test_usnat_opts_out_of_sale_and_targeting_when_refused_or_by_gpc() -> None:
    gpp_settings = GppSettings(mspa_covered=True, mspa_mode="opt_out")
    refused = issuing.usnat(
        SITE,
        gpp_settings,
        {"necessary": True, "analytics": True, "marketing": False, "personalization": True},
        False,
    )
    assert (
        refused["SaleOptOut"],
        refused["SharingOptOut"],
        refused["TargetedAdvertisingOptOut"],
    ) == (1, 1, 1)
    assert (
        refused["MspaCoveredTransaction"],
        refused["MspaOptOutOptionMode"],
        refused["MspaServiceProviderMode"],
    ) == (1, 1, 2)
    granted = issuing.usnat(
        SITE,
        gpp_settings,
        {"necessary": True, "analytics": True, "marketing": True, "personalization": True},
        False,
    )
    assert granted["SaleOptOut"] == 2 and granted["Gpc"] is False
    before = issuing.usnat(SITE, GppSettings(), None, True)
    assert (
        before["SaleOptOut"] == 1
        and before["Gpc"] is True
        and before["MspaCoveredTransaction"] == 2
    )
    text = gpp.encode({"usnat": before})
    assert gpp.decode(text)["usnat"]["Gpc"] is True


@settings(max_examples=60, deadline=None)
@given(choices=choices_st, gpc=st.booleans(), eea=st.booleans())
def test_issued_strings_always_pass_the_check(
    choices: dict[str, bool], gpc: bool, eea: bool
) -> None:
    region, rule = (Region("DE"), "gdpr") if eea else (Region("US", "TX"), "us-states")
    issued = _issue(SITE, choices, region, rule, gpc)
    body = {"tc_string": issued.tc_string, "gpp_string": issued.gpp_string}
    kept = record_signals(body, Issuer(SITE, GVL), rule, region, gpc, choices, "de", NOW)
    assert kept is not None and kept.tc_string == issued.tc_string


@settings(max_examples=60, deadline=None)
@given(choices=choices_st, other=choices_st)
def test_another_choices_string_is_refused_unless_it_says_the_same(
    choices: dict[str, bool], other: dict[str, bool]
) -> None:
    """Threat: replaying the TC string of a more generous choice with a stingier record."""
    issued = _issue(SITE, other, Region("DE"), "gdpr")
    same = (
        tcf.decode(issued.tc_string or "").purpose_consents
        == tcf.decode(_issue(SITE, choices, Region("DE"), "gdpr").tc_string or "").purpose_consents
    )
    try:
        record_signals(
            {"tc_string": issued.tc_string},
            Issuer(SITE, GVL),
            "gdpr",
            Region("DE"),
            False,
            choices,
            "de",
            NOW,
        )
    except BadRequest as exc:
        refused: tuple[int, str] | None = (exc.status_code, exc.code)
    else:
        refused = None
    assert refused == (None if same else (422, "tc_string_contradicts_choice"))


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(["tc_string", "gpp_string"]),
    text=st.text(max_size=120)
    | st.from_regex(r"[A-Za-z0-9_~.-]{0,120}", fullmatch=True)
    | st.integers()
    | st.none(),
)
def test_any_value_is_kept_or_refused_with_a_4xx(name: str, text: object) -> None:
    """Threat: hostile strings in a record: never an exception other than a precise 4xx."""
    choices = {"necessary": True, "analytics": False, "marketing": False, "personalization": False}
    status = 0
    try:
        record_signals(
            {name: text}, Issuer(SITE, GVL), "gdpr", Region("DE"), False, choices, "en", NOW
        )
    except BadRequest as exc:
        status = exc.status_code
    assert status == 0 or 400 <= status < 500


def test_proof_packs_explain_the_strings() -> None:
    issued = _issue(
        SITE,
        {"necessary": True, "analytics": True, "marketing": True, "personalization": True},
        Region("DE"),
        "gdpr",
    )
    said = explain({"tc_string": issued.tc_string, "gpp_string": issued.gpp_string, "age": 3})
    assert said is not None
    assert said["tc_string"]["cmpId"] == 300 and said["tc_string"]["purposeConsents"][0] == 1
    assert said["gpp_string"]["header"]["SectionIds"] == [2]
    assert explain({"tc_string": "garbage"}) == {"tc_string": {"error": explain_error("garbage")}}
    assert explain({}) is None and explain(None) is None


def explain_error(text: str) -> str:
    try:
        tcf.decode(text, strict=False)
    except BadRequest as exc:
        return exc.message
    raise AssertionError("decoded")


def test_first_layer_stacks_cover_only_declared_purposes() -> None:
    from gateway.sites import tcf_texts

    items = tcf_texts.first_layer(TCF, GVL)
    kinds = [(i.kind, i.text.id) for i in items]
    # Stack 42 needs purpose 11, which the site does not declare; stack 1 needs feature 2.
    assert ("stack", 42) not in kinds and ("stack", 1) not in kinds
    assert ("stack", 2) in kinds  # purposes 2 and 7
    assert ("special_feature", 1) in kinds
    covered = {p for kind, i in kinds if kind == "stack" for p in GVL.stacks[i].purposes}
    listed = {i for kind, i in kinds if kind == "purpose"}
    assert covered | listed == {1, 2, 3, 4, 5, 6, 7, 8, 9, 10} and not covered & listed


def test_the_demo_site_has_no_tcf(tmp_path: Path) -> None:
    site = read_site(ROOT / "banners" / "demo")
    assert site.tcf is None and site.gpp is None


def test_the_issuer_remembers_per_bundle_and_stays_bounded() -> None:
    # Threat: the cache key holds the visitor's choices, which an outsider picks; it must not
    # grow without bound, and a result must never come from another site or vendor list.
    issuer = issuing.Issuer(SITE, GVL, size=8)
    applies = issuing.applicable(SITE, GVL, "gdpr", Region("DE"))
    first = issuer.issue(applies, {"analytics": True}, False, "de", NOW)
    assert issuer.issue(applies, {"analytics": True}, False, "de", NOW + 1) is first  # same day
    assert first == issuing.Issuer(SITE, GVL).issue(applies, {"analytics": True}, False, "de", NOW)
    purposes = [p.id for p in SITE.purposes]
    for n in range(40):  # choices an outsider varies
        choices = {p: bool(n >> i & 1) for i, p in enumerate(purposes)}
        issuer.issue(applies, choices, n % 2 == 0, "de", NOW)
        assert len(issuer._issued) <= 8
    # Another site's issuer never answers from this one's entries.
    other = dataclasses.replace(SITE, id="other")
    assert issuing.Issuer(other, GVL).issue(applies, {"analytics": True}, False, "de", NOW) is not (
        first
    )
