"""Google Consent Mode v2: the ``default`` values before any choice and the ``update`` after one.

A Consent Mode type is granted only if every site purpose that maps it (``Purpose.consent_mode``)
is essential or on. Under the EEA rules since March 2024 ``ad_user_data`` and
``ad_personalization`` are decided like the others, each by the purposes that map it, never
inferred from ``ad_storage``. A type no purpose maps keeps the rule's default, except that
``security_storage`` is always granted. GPC (where the rule honours it as an opt-out) denies
the ad types before any choice whatever maps them: a visitor who signalled it is never
defaulted into advertising. For a visitor the site signals to be a minor, the types of what the
rule bans for minors are denied likewise.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.core.model import CONSENT_MODE_TYPES, Rule, Site
from gateway.signals.gpc import default_choices

# How long tags wait for the banner's ``update`` before firing with the defaults.
WAIT_FOR_UPDATE_MS = 500
# The types a "Do Not Sell or Share" opt-out (GPC) covers: advertising storage and data use.
AD_TYPES: tuple[str, ...] = ("ad_storage", "ad_user_data", "ad_personalization")
# The types each kind of minors' ban covers when no purpose decides them.
_MINOR_TYPES: Mapping[str, tuple[str, ...]] = {
    "sale": AD_TYPES,
    "targeted_ads": AD_TYPES,
    "tracking": (*AD_TYPES, "analytics_storage", "personalization_storage"),
}


def _mapped(site: Site, choices: Mapping[str, bool]) -> dict[str, str]:
    """Types some purpose maps → granted if every such purpose is essential or chosen."""
    granted: dict[str, bool] = {}
    for purpose in site.purposes:
        on = purpose.essential or choices.get(purpose.id) is True
        for mode_type in purpose.consent_mode:
            granted[mode_type] = granted.get(mode_type, True) and on
    return {t: "granted" if granted[t] else "denied" for t in CONSENT_MODE_TYPES if t in granted}


def defaults(rule: Rule, site: Site, *, gpc: bool = False, minor: bool = False) -> dict[str, str]:
    """The ``gtag('consent', 'default', …)`` values for every type, in a fixed order."""
    values = _mapped(site, default_choices(rule, site, gpc, minor))
    fallback = "granted" if rule.default_granted else "denied"
    never: set[str] = set(AD_TYPES) if gpc and rule.gpc else set()
    if minor and rule.minor_age:
        never.update(t for kind in rule.minor_prohibited for t in _MINOR_TYPES[kind])
    result = {}
    for mode_type in CONSENT_MODE_TYPES:
        if mode_type == "security_storage" and mode_type not in values:
            result[mode_type] = "granted"
        elif mode_type in never:
            result[mode_type] = "denied"
        elif mode_type in values:
            result[mode_type] = values[mode_type]
        else:
            result[mode_type] = rule.consent_mode.get(mode_type, fallback)
    return result


def update(site: Site, choices: Mapping[str, bool]) -> dict[str, str]:
    """The ``gtag('consent', 'update', …)`` values after a choice: only the types purposes map.

    A type no purpose maps is left out so that it keeps its default (gtag merges updates);
    a purpose missing from ``choices`` counts as refused.
    """
    return _mapped(site, choices)


def lint(site: Site) -> list[str]:
    """Consent Mode mapping problems worth a warning in ``consent-gateway check``."""
    problems = []
    for purpose in site.purposes:
        unknown = [t for t in purpose.consent_mode if t not in CONSENT_MODE_TYPES]
        if unknown:
            problems.append(f"purposes.{purpose.id}: unknown Consent Mode types {unknown}")
        if "ad_storage" in purpose.consent_mode and not set(AD_TYPES[1:]) <= set(
            purpose.consent_mode
        ):
            problems.append(
                f"purposes.{purpose.id}: maps ad_storage without ad_user_data and "
                "ad_personalization; since March 2024 Google needs both for EEA audiences"
            )
        if purpose.essential and purpose.sale_or_share:
            problems.append(
                f"purposes.{purpose.id}: an essential purpose cannot be sale_or_share "
                "(it could never honour an opt-out)"
            )
    return problems
