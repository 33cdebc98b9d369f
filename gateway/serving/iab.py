"""The IAB part of the serving path, for sites with ``[tcf]``/``[gpp]`` and the visitors they
apply to: the ``iab`` block of the config, the stub appended to consent.js, and tcf.js (the CMP
with the first layer's localized texts), built once per site version and locale.

A site without them, or a visitor they do not apply to, gets none of it: the config has no
``iab`` key and consent.js is byte for byte what it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import rjsmin  # type: ignore[import-untyped]

from gateway.core import paths
from gateway.core.errors import ConfigError
from gateway.core.iab import ISSUED_SECTIONS
from gateway.serving.snippet import script_json
from gateway.sites import tcf_texts
from gateway.sites.catalog import SiteBundle
from gateway.standards.gpp import SECTION_IDS
from gateway.standards.issuing import (
    Applicable,
    applicable,
    disclosed,
    gpp_cmp_id,
    tcf_issuing,
)

PLACEHOLDER = "__CG_TCF__"
MAX_SCRIPTS = 512  # (site, version, locale) bodies kept; each is a few KB


def iab_config(
    bundle: SiteBundle, rule_id: str, region: Any, gpc: bool, language: str
) -> dict[str, Any] | None:
    """The config's ``iab`` block for one visitor, or None where neither TCF nor GPP applies."""
    site = bundle.site
    gvl = bundle.gvl
    applies = applicable(site, gvl, rule_id, region)
    if not applies.any:
        return None
    settings = tcf_issuing(site, gvl)
    gpp = None
    if applies.gpp_sections:
        # Before any choice: the US sections as the visitor stands (GPC is an opt-out); the TC
        # string, and tcfeuv2 with it, only once the visitor has chosen.
        before = Applicable(False, tuple(s for s in applies.gpp_sections if s != "tcfeuv2"))
        default = bundle.issuer.issue(before, None, gpc, language, 0)
        gpp = {
            "cmp_id": gpp_cmp_id(site),
            "sections": list(applies.gpp_sections),
            "ids": {name: SECTION_IDS[name] for name in ISSUED_SECTIONS},
            "string": default.gpp_string or "",
            "data": default.gpp_data,
        }
    query = f"?lang={language.replace('_', '-')}&v={bundle.banner_version}"
    return {
        "tcf": applies.tcf,
        "cmp_id": settings.cmp_id if settings is not None else None,
        "vendor_list_version": gvl.vendor_list_version if settings and gvl else None,
        "gpp": gpp,
        "script": paths.url(paths.TCF_SCRIPT, site=site.id) + query,
    }


def tcf_data(bundle: SiteBundle, locale: str) -> dict[str, Any]:
    """What tcf.js shows and reports, in the visitor's language."""
    site = bundle.site
    gettext = bundle.translations.get(locale).gettext
    settings = site.tcf
    gvl = bundle.gvl
    data: dict[str, Any] = {
        "strings_url": paths.url(paths.IAB_STRINGS, site=site.id),
        "cmp_version": settings.cmp_version if settings else 0,
        "publisher_cc": settings.publisher_country if settings else "AA",
        "vendor_list_version": gvl.vendor_list_version if gvl else None,
        "policy_version": gvl.tcf_policy_version if gvl else None,
        "texts": {},
        "items": [],
        "purposes": {},
        "vendors": [],
    }
    if settings is None or gvl is None:
        return data
    vendors = disclosed(settings, gvl)
    count = str(len(vendors))
    data["texts"] = {
        key: gettext(msgid).replace("%(count)s", count)
        for key, msgid in tcf_texts.FIRST_LAYER.items()
    }
    data["items"] = [
        {
            "kind": item.kind,
            "id": item.text.id,
            "name": gettext(item.text.name),
            "description": gettext(item.text.description),
        }
        for item in tcf_texts.first_layer(settings, gvl)
    ]
    purposes, _ = tcf_texts.declared(settings)
    data["purposes"] = {
        str(i): gettext(gvl.purposes[i].name) for i in purposes if i in gvl.purposes
    }
    data["vendors"] = [
        {
            "id": v.id,
            "name": v.name,
            "policy": v.policy_url,
            "consent": [p for p in (*v.purposes, *v.flexible_purposes) if p in purposes],
            "li": [p for p in v.leg_int_purposes if p in purposes],
        }
        for v in (gvl.vendors[vid] for vid in vendors)
    ]
    return data


def _minified(path: Path) -> str:
    try:
        return str(rjsmin.jsmin(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError(f"cannot read {path.name}: {exc}", where=str(path)) from exc


class IabScripts:
    """static/iab-stub.js and static/tcf.js, minified once; tcf.js bodies cached per
    (site, banner version, locale)."""

    def __init__(self, static_dir: Path) -> None:
        self._static = static_dir
        self._stub: bytes | None = None
        self._tcf: tuple[bytes, bytes] | None = None
        self._bodies: dict[tuple[str, str, str], bytes] = {}

    def stub(self) -> bytes:
        if self._stub is None:
            self._stub = b"\n" + _minified(self._static / "iab-stub.js").encode()
        return self._stub

    def tcf_js(self, bundle: SiteBundle, locale: str) -> bytes:
        key = (bundle.site.id, bundle.banner_version, locale)
        body = self._bodies.get(key)
        if body is not None:
            return body
        if self._tcf is None:
            head, sep, tail = _minified(self._static / "tcf.js").partition(PLACEHOLDER)
            if not sep:
                raise ConfigError(f"tcf.js lacks {PLACEHOLDER}", where=str(self._static))
            self._tcf = (head.encode(), tail.encode())
        body = b"".join((self._tcf[0], script_json(tcf_data(bundle, locale)), self._tcf[1]))
        if len(self._bodies) >= MAX_SCRIPTS:
            self._bodies.clear()
        self._bodies[key] = body
        return body
