"""A site's IAB settings: ``[tcf]`` (TCF v2.3) and ``[gpp]`` (Global Privacy Platform), as values.

Parsed by ``gateway/sites/iab_sitefile.py``; the strings themselves are made and checked by
``gateway/standards/issuing.py`` and ``record_check.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# TCF Policies: a TC string is issued only under an IAB Europe-registered CMP id; ids 0 and 1
# are not assignable (the codecs refuse a CMP id below 2).
MIN_CMP_ID = 2
# The GPP CMP API lets a CMP that signals only US (MSPA) sections report CMP id 1.
GPP_ONLY_CMP_ID = 1
# Rules under which TCF applies by default: the EEA (gdpr) and the United Kingdom.
TCF_RULES: tuple[str, ...] = ("gdpr", "uk")
# Sections the gateway writes itself: the TC string inside GPP, and the US national section.
ISSUED_SECTIONS: tuple[str, ...] = ("tcfeuv2", "usnat")
RESTRICTION_TYPES: Mapping[str, int] = {
    "not_allowed": 0,
    "require_consent": 1,
    "require_legitimate_interest": 2,
}


@dataclass(frozen=True)
class TcfRestriction:
    """A publisher restriction: ``purpose`` for ``vendors`` is restricted as ``kind``."""

    purpose: int
    kind: int  # a RESTRICTION_TYPES value
    vendors: tuple[int, ...]


@dataclass(frozen=True)
class TcfSettings:
    """``[tcf]``: the CMP id the site's strings are issued under and what they disclose.

    ``consent`` / ``legitimate_interest`` / ``special_features`` map a site purpose to the TCF
    purposes (special features) whose bits follow that purpose's choice.
    """

    cmp_id: int = 0  # 0: no registered CMP id, so no TC string is issued
    cmp_version: int = 1
    publisher_country: str = "AA"
    vendors: tuple[int, ...] = ()
    consent: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    legitimate_interest: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    special_features: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    restrictions: tuple[TcfRestriction, ...] = ()
    rules: tuple[str, ...] = TCF_RULES
    gvl_max_age_days: int = 14

    @property
    def issuing(self) -> bool:
        """A registered CMP id is configured: the gateway may issue TC strings."""
        return self.cmp_id >= MIN_CMP_ID


@dataclass(frozen=True)
class GppSettings:
    """``[gpp]``: which sections apply per region, and the MSPA declarations of usnat."""

    cmp_id: int = 0  # 0: the TCF CMP id if registered, else GPP_ONLY_CMP_ID
    cmp_version: int = 1
    # Region code ("US", "US-CA", "DE") → sections; the most specific code wins. Regions not
    # listed take the defaults: usnat in the US, tcfeuv2 where TCF applies.
    regions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    mspa_covered: bool = False
    mspa_mode: str = ""  # "", "opt_out" (Opt-Out Option Mode) or "service_provider"
