"""`consent-gateway check` for a site's ``[tcf]`` and ``[gpp]``: what stops strings from being
issued, or from being lawful, named with the key to change."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from gateway.core.iab import TcfSettings
from gateway.sites import tcf_texts
from gateway.sites.catalog import SiteBundle
from gateway.sites.gvl_store import gvl_path
from gateway.standards.gvl import GlobalVendorList
from gateway.standards.issuing import gpp_cmp_id
from gateway.standards.tcf_model import NO_LI_PURPOSES

SHOWN = 3


class Report(Protocol):
    notes: list[str]

    def error(self, where: str, message: str, hint: str = "") -> None: ...

    def warn(self, where: str, message: str, hint: str = "") -> None: ...


def check_iab(bundle: SiteBundle, report: Report, now: dt.datetime | None = None) -> None:
    """Findings about the site's IAB settings (nothing for a site without them)."""
    site = bundle.site
    where = f"{bundle.directory / 'site.toml'}: "
    if site.tcf is not None:
        _check_tcf(bundle, site.tcf, where, report, now or dt.datetime.now(dt.UTC))
    if site.gpp is not None:
        cmp_id = gpp_cmp_id(site)
        issuing_tcf = site.tcf is not None and site.tcf.issuing
        report.notes.append(
            f"  gpp: __gpp reports CMP id {cmp_id}"
            + ("" if issuing_tcf or site.gpp.cmp_id else " (no TCF: the id GPP allows for a CMP "
               "that signals US sections only)")
        )  # fmt: skip
        sections = {s for ss in site.gpp.regions.values() for s in ss}
        if "tcfeuv2" in sections and not issuing_tcf:
            report.warn(
                where + "gpp.regions",
                "tcfeuv2 is listed but the site issues no TC string, so it is left out",
                "configure [tcf] with a registered cmp_id",
            )


def _check_tcf(
    bundle: SiteBundle, tcf: TcfSettings, where: str, report: Report, now: dt.datetime
) -> None:
    if not tcf.issuing:
        report.error(
            where + "tcf.cmp_id",
            "no IAB Europe-registered CMP id: the gateway issues no TC string and serves no "
            "__tcfapi for this site",
            "TCF Policies: only a registered CMP may create TC strings; set cmp_id to the id "
            "IAB Europe assigned you (or remove [tcf])",
        )
    site = bundle.site
    for basis, mapping in (("consent", tcf.consent), ("special_features", tcf.special_features)):
        for purpose_id in mapping:
            purpose = site.purpose(purpose_id)
            if purpose is not None and purpose.essential:
                report.error(
                    where + f"tcf.{basis}.{purpose_id}",
                    f"{purpose_id} is essential, so always on: its TCF bits would claim a "
                    "consent the visitor never gave",
                    "map an optional purpose, or declare the TCF purpose on legitimate interest",
                )
    for purpose_id, ids in tcf.legitimate_interest.items():
        banned = sorted(NO_LI_PURPOSES.intersection(ids))
        if banned:
            report.error(
                where + f"tcf.legitimate_interest.{purpose_id}",
                f"TCF purpose {banned[0]} cannot rest on legitimate interest",
                "TCF v2.2+: purposes 1 and 3-6 need consent; move it to [tcf.consent]",
            )
    for index, r in enumerate(tcf.restrictions):
        if r.kind == 2 and r.purpose in NO_LI_PURPOSES:
            report.error(
                where + f"tcf.restrictions[{index}]",
                f"purpose {r.purpose} cannot be restricted to legitimate interest",
                "TCF v2.2+: purposes 1 and 3-6 need consent",
            )
    known_rules = set(bundle.rules.table.rules)
    for rule in tcf.rules:
        if rule not in known_rules:
            report.error(where + "tcf.rules", f"unknown rule {rule!r}", "e.g. gdpr, uk")
    gvl = bundle.gvl
    if gvl is None:
        report.error(
            where + "tcf",
            "no Global Vendor List imported: no TC string can be issued",
            f"run `consent-gateway tcf gvl import vendor-list.json` (stored in "
            f"{gvl_path(bundle.directory.parent)})",
        )
        return
    _check_vendors(tcf, gvl, where, report, now)
    _check_texts(bundle, tcf, gvl, report)


def _check_vendors(
    tcf: TcfSettings, gvl: GlobalVendorList, where: str, report: Report, now: dt.datetime
) -> None:
    age = gvl.age_days(now)
    if age > tcf.gvl_max_age_days:
        report.error(
            where + "tcf.gvl_max_age_days",
            f"the vendor list (version {gvl.vendor_list_version}, lastUpdated "
            f"{gvl.last_updated.date()}) is {age:.0f} days old, more than "
            f"{tcf.gvl_max_age_days}",
            "import the current vendor-list.json (`consent-gateway tcf gvl import FILE`)",
        )
    unknown = [v for v in tcf.vendors if v not in gvl.vendors]
    if unknown:
        report.error(
            where + "tcf.vendors",
            f"vendor {unknown[0]} is not in the vendor list (version "
            f"{gvl.vendor_list_version})"
            + (f", nor {len(unknown) - 1} more" if unknown[1:] else ""),
            "check the id at IAB Europe's vendor list, or import a newer one",
        )
    deleted = [v for v in tcf.vendors if v in gvl.vendors and gvl.vendors[v].deleted]
    if deleted:
        report.warn(
            where + "tcf.vendors",
            f"vendor {deleted[0]} ({gvl.vendors[deleted[0]].name}) is deleted from the vendor "
            "list: it is no longer disclosed and gets no consent",
            "remove it from tcf.vendors",
        )
    if not tcf.consent and not tcf.legitimate_interest:
        report.warn(
            where + "tcf",
            "no TCF purpose is mapped to a site purpose: every TC string says no",
            "map site purposes in [tcf.consent] (e.g. marketing = [1, 2, 3, 4, 7])",
        )


def _check_texts(
    bundle: SiteBundle, tcf: TcfSettings, gvl: GlobalVendorList, report: Report
) -> None:
    """Every locale of the site must translate every TCF text: the Policies require the first
    layer in the visitor's language, and a mix of languages is not that."""
    site = bundle.site
    msgids = list(dict.fromkeys(m for m, _ in tcf_texts.messages(tcf, gvl)))
    for locale in site.locales:
        if locale == site.default_locale:
            continue
        missing = [m for m in msgids if not bundle.translations.has(locale, m)]
        if missing:
            shown = ", ".join(repr(m[:50]) for m in missing[:SHOWN])
            report.error(
                f"locale {locale} of site {site.id}",
                f"{len(missing)} of the {len(msgids)} TCF texts are not translated: {shown}",
                f"run `consent-gateway i18n extract --site {site.id}` and `i18n update`, "
                "then translate them (IAB Europe publishes official translations of the "
                "purposes and stacks)",
            )
