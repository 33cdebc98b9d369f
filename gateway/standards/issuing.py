"""The TC and GPP strings a visitor's choice gives, under a site's ``[tcf]`` and ``[gpp]``.

Pure: the recording path calls ``issue`` with the validated choice (the strings are made on the
server, with the same codecs that check strings sent by apps), the serving path calls
``applicable`` and ``default_gpp`` for what a visitor gets before any choice.

How a choice becomes bits: a TCF purpose (special feature) is on when a site purpose mapped to
it in ``[tcf.consent]`` (``[tcf.legitimate_interest]``, ``[tcf.special_features]``) is chosen; a
disclosed vendor gets a consent (legitimate-interest) bit when it declares in the vendor list a
purpose that is on under that basis. Purposes 1 and 3-6 never rest on legitimate interest.
The usnat section opts out of sale and sharing when a ``sale_or_share`` purpose is refused, and
of targeted advertising when a purpose mapping ``ad_personalization`` is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from gateway.core.iab import GPP_ONLY_CMP_ID, GppSettings, TcfSettings
from gateway.core.model import Region, Site
from gateway.core.purposes import targets_ads
from gateway.standards import gpp, gpp_tcfeuv2, tcf
from gateway.standards.gvl import GlobalVendorList
from gateway.standards.tcf_model import NO_LI_PURPOSES, PurposeRestriction, TCModel, to_json

DAY_DECISECONDS = 864_000
USNAT_VERSION = 1
_SENSITIVE, _CHILD = 12, 2  # usnat version 1: sensitive data categories, child age bands


class Applicable(NamedTuple):
    """What applies to one visitor: TCF (with a TC string), and the GPP sections."""

    tcf: bool
    gpp_sections: tuple[str, ...]

    @property
    def any(self) -> bool:
        return self.tcf or bool(self.gpp_sections)


class Issued(NamedTuple):
    """The strings for one choice, and their fields as the reference libraries name them."""

    tc_string: str | None
    gpp_string: str | None
    tc_data: dict[str, Any] | None  # iabtcf TCModel JSON
    gpp_data: dict[str, Any] | None  # iabgpp sections JSON, header included


NOTHING = Applicable(False, ())


def tcf_issuing(site: Site, gvl: GlobalVendorList | None) -> TcfSettings | None:
    """The site's [tcf] when a TC string may be issued: a registered CMP id and a vendor list."""
    settings = site.tcf
    return settings if settings is not None and settings.issuing and gvl is not None else None


def applicable(
    site: Site, gvl: GlobalVendorList | None, rule_id: str, region: Region
) -> Applicable:
    """TCF where the visitor's rule is one of ``[tcf] rules``; GPP sections for the region."""
    settings = tcf_issuing(site, gvl)
    on = settings is not None and rule_id.split("+")[0] in settings.rules
    return Applicable(on, gpp_sections(site.gpp, region, on))


def gpp_sections(settings: GppSettings | None, region: Region, tcf_on: bool) -> tuple[str, ...]:
    """The sections for a region: ``[gpp.regions]`` (most specific code first), else usnat in
    the US and tcfeuv2 where TCF applies; tcfeuv2 only ever where TCF applies."""
    if settings is None:
        return ()
    sections: tuple[str, ...] | None = None
    for code in (region.code, region.country):
        if code and code in settings.regions:
            sections = settings.regions[code]
            break
    if sections is None:
        sections = ("usnat",) if region.country == "US" else ("tcfeuv2",)
    return tuple(s for s in sections if s != "tcfeuv2" or tcf_on)


def gpp_cmp_id(site: Site) -> int:
    """The CMP id __gpp reports: [gpp] cmp_id, else the registered TCF one, else 1."""
    if site.gpp is not None and site.gpp.cmp_id:
        return site.gpp.cmp_id
    if site.tcf is not None and site.tcf.issuing:
        return site.tcf.cmp_id
    return GPP_ONLY_CMP_ID


def _on(mapping: Mapping[str, tuple[int, ...]], choices: Mapping[str, bool]) -> set[int]:
    return {i for purpose, ids in mapping.items() if choices.get(purpose) for i in ids}


def disclosed(settings: TcfSettings, gvl: GlobalVendorList) -> tuple[int, ...]:
    """The site's vendors that the vendor list holds and has not deleted."""
    vendors = gvl.vendors
    return tuple(v for v in settings.vendors if v in vendors and not vendors[v].deleted)


def _vendors_with(
    ids: Iterable[int], wanted: set[int], gvl: GlobalVendorList, li: bool
) -> list[int]:
    out = []
    for vid in ids:
        vendor = gvl.vendors[vid]
        declared = vendor.leg_int_purposes if li else (*vendor.purposes, *vendor.flexible_purposes)
        if wanted.intersection(declared):
            out.append(vid)
    return out


def consent_language(language: str) -> str:
    """The TC string's ConsentLanguage: the two-letter ISO 639-1 code, upper case (EN if none)."""
    lang = language.split("_")[0].split("-")[0].upper()
    return lang if len(lang) == 2 and lang.isalpha() and lang.isascii() else "EN"


def tc_model(
    settings: TcfSettings,
    gvl: GlobalVendorList,
    choices: Mapping[str, bool],
    language: str,
    now_deciseconds: int,
) -> TCModel:
    """The TC string's values for a choice. Created and LastUpdated are the day (UTC), which
    is all a vendor needs and keeps the string from dating the visit to the second."""
    consents = _on(settings.consent, choices)
    li = _on(settings.legitimate_interest, choices) - NO_LI_PURPOSES
    features = _on(settings.special_features, choices)
    vendors = disclosed(settings, gvl)
    vendor_consents = set(_vendors_with(vendors, consents, gvl, li=False))
    vendor_consents |= {
        v for v in vendors if features.intersection(gvl.vendors[v].special_features)
    }
    day = now_deciseconds - now_deciseconds % DAY_DECISECONDS
    return TCModel(
        cmp_id=settings.cmp_id,
        cmp_version=settings.cmp_version,
        vendor_list_version=gvl.vendor_list_version,
        created=day,
        last_updated=day,
        consent_screen=1,
        consent_language=consent_language(language),
        policy_version=gvl.tcf_policy_version,
        publisher_country_code=settings.publisher_country,
        special_feature_optins=tuple(sorted(features)),
        purpose_consents=tuple(sorted(consents)),
        purpose_legitimate_interests=tuple(sorted(li)),
        vendor_consents=tuple(sorted(vendor_consents)),
        vendor_legitimate_interests=tuple(_vendors_with(vendors, li, gvl, li=True)),
        publisher_restrictions=tuple(
            PurposeRestriction(r.purpose, r.kind, r.vendors) for r in settings.restrictions
        ),
        vendors_disclosed=vendors,
    )


def usnat(
    site: Site, settings: GppSettings, choices: Mapping[str, bool] | None, gpc: bool
) -> dict[str, Any]:
    """The MSPA US National section (version 1) for a choice; None: no choice yet, so no
    opt-out but the one GPC expresses."""
    sale = [p for p in site.optional_purposes if p.sale_or_share]
    targeted = [p for p in site.optional_purposes if targets_ads(p)]

    def opted_out(purposes: list[Any]) -> int:
        if not purposes:
            return 0  # not applicable: the site does no such processing
        refused = gpc if choices is None else any(not choices.get(p.id) for p in purposes)
        return 1 if refused else 2

    covered = settings.mspa_covered
    mode = settings.mspa_mode
    return {
        "Version": USNAT_VERSION,
        "SharingNotice": 1 if sale else 0,
        "SaleOptOutNotice": 1 if sale else 0,
        "SharingOptOutNotice": 1 if sale else 0,
        "TargetedAdvertisingOptOutNotice": 1 if targeted else 0,
        "SensitiveDataProcessingOptOutNotice": 0,
        "SensitiveDataLimitUseNotice": 0,
        "SaleOptOut": opted_out(sale),
        "SharingOptOut": opted_out(sale),
        "TargetedAdvertisingOptOut": opted_out(targeted),
        "SensitiveDataProcessing": [0] * _SENSITIVE,
        "KnownChildSensitiveDataConsents": [0] * _CHILD,
        "PersonalDataConsents": 0,
        "MspaCoveredTransaction": 1 if covered else 2,
        "MspaOptOutOptionMode": (1 if mode == "opt_out" else 2) if covered else 0,
        "MspaServiceProviderMode": (1 if mode == "service_provider" else 2) if covered else 0,
        "GpcSegmentIncluded": True,
        "Gpc": gpc,
    }


class Issuer:
    """The strings for a choice (None: no choice yet; then no TC string, as TCF asks first)
    under one published site and its vendor list, dated to the day and in the consent
    language TCF allows, and remembered.

    Visitors share a few combinations a day, and encoding both strings costs ~150 µs
    (measured, bench/iab.py). Each site bundle holds its own (gateway/sites/catalog.py), so
    a reload's new bundle starts empty and no entry outlives the site and list it was made
    for; at most ``size`` entries, all dropped when full (the key holds the visitor's
    choices, which an outsider picks). A result is shared: read it, never change it."""

    def __init__(self, site: Site, gvl: GlobalVendorList | None, *, size: int = 4096) -> None:
        self.site = site
        self.gvl = gvl
        self.size = size
        self._issued: dict[tuple[Any, ...], Issued] = {}

    def issue(
        self,
        applies: Applicable,
        choices: Mapping[str, bool] | None,
        gpc: bool,
        language: str,
        now_deciseconds: int,
    ) -> Issued:
        day = now_deciseconds - now_deciseconds % DAY_DECISECONDS
        language = consent_language(language)
        key = (
            applies, None if choices is None else tuple(sorted(choices.items())), gpc, language,
            day,
        )  # fmt: skip
        hit = self._issued.get(key)
        if hit is not None:
            return hit
        issued = _issue(self.site, self.gvl, applies, choices, gpc, language, day)
        if len(self._issued) >= self.size:
            self._issued.clear()
        self._issued[key] = issued
        return issued


def _issue(
    site: Site,
    gvl: GlobalVendorList | None,
    applies: Applicable,
    choices: Mapping[str, bool] | None,
    gpc: bool,
    language: str,
    now_deciseconds: int,
) -> Issued:
    model = None
    settings = tcf_issuing(site, gvl)
    if applies.tcf and settings is not None and gvl is not None and choices is not None:
        model = tc_model(settings, gvl, choices, language, now_deciseconds)
    sections: dict[str, Any] = {}
    for name in applies.gpp_sections:
        if name == "tcfeuv2" and model is not None:
            sections[name] = gpp_tcfeuv2.to_json(model)
        elif name == "usnat" and site.gpp is not None:
            sections[name] = usnat(site, site.gpp, choices, gpc)
    gpp_string = gpp.encode(sections) if sections else None
    if gpp_string is not None:
        ids = sorted(gpp.SECTION_IDS[name] for name in sections)
        sections = {"header": {"Id": 3, "Version": 1, "SectionIds": ids}, **sections}
    return Issued(
        tc_string=None if model is None else tcf.encode(model),
        gpp_string=gpp_string,
        tc_data=None if model is None else to_json(model),
        gpp_data=sections or None,
    )


def strings_of(issued: Issued) -> dict[str, str]:
    """The strings as a record's signals: ``tc_string`` and ``gpp_string`` when present."""
    out = {}
    if issued.tc_string is not None:
        out["tc_string"] = issued.tc_string
    if issued.gpp_string is not None:
        out["gpp_string"] = issued.gpp_string
    return out


def iab_answer(issued: Issued) -> dict[str, Any]:
    """What a 201 adds for the snippet's tcf.js: the strings and, when the gateway made them,
    their fields (TCModel and iabgpp names), so the page needs no decoder."""
    out: dict[str, Any] = dict(strings_of(issued))
    if issued.tc_data is not None or issued.gpp_data is not None:
        out["iab"] = {"tcf": issued.tc_data, "gpp": issued.gpp_data}
    return out
