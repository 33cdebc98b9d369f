"""Google Consent Mode v2: the ``default`` values before any choice and the ``update`` after one.

A Consent Mode type is granted only if every site purpose that maps it (``Purpose.consent_mode``)
is essential or on. Under the EEA rules since March 2024 ``ad_user_data`` and
``ad_personalization`` are decided like the others, each by the purposes that map it, never
inferred from ``ad_storage``. A type no purpose maps keeps the rule's default, except that
``security_storage`` is always granted and GPC (where the rule honours it) denies the ad types.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.core.model import CONSENT_MODE_TYPES, Rule, Site
from gateway.signals.gpc import default_choices

# How long tags wait for the banner's ``update`` before firing with the defaults.
WAIT_FOR_UPDATE_MS = 500
# The types a "Do Not Sell or Share" opt-out (GPC) covers: advertising storage and data use.
AD_TYPES: tuple[str, ...] = ("ad_storage", "ad_user_data", "ad_personalization")


def _mapped(site: Site, choices: Mapping[str, bool]) -> dict[str, str]:
    """Types some purpose maps → granted if every such purpose is essential or chosen."""
    granted: dict[str, bool] = {}
    for purpose in site.purposes:
        on = purpose.essential or choices.get(purpose.id) is True
        for mode_type in purpose.consent_mode:
            granted[mode_type] = granted.get(mode_type, True) and on
    return {t: "granted" if granted[t] else "denied" for t in CONSENT_MODE_TYPES if t in granted}


def defaults(rule: Rule, site: Site, *, gpc: bool = False) -> dict[str, str]:
    """The ``gtag('consent', 'default', …)`` values for every type, in a fixed order."""
    values = _mapped(site, default_choices(rule, site, gpc))
    fallback = "granted" if rule.default_granted else "denied"
    result = {}
    for mode_type in CONSENT_MODE_TYPES:
        if mode_type in values:
            result[mode_type] = values[mode_type]
        elif mode_type == "security_storage":
            result[mode_type] = "granted"
        elif gpc and rule.gpc and mode_type in AD_TYPES:
            result[mode_type] = "denied"
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
