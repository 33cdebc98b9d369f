"""What a rule makes of one site purpose: separate, prohibited, exempt, or a refusal that lasts.

Pure functions of a ``Rule`` and a ``Purpose`` (and, for minors, the site's age signal), used
alike by the config the snippet receives, the Consent Mode defaults and the validation of
records, so the three can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.core.model import Exemption, Purpose, Rule

# Precise geolocation is sensitive data in every law that lists it (Cal. Civ. Code
# 1798.140(ae)(1)(C), Md. Com. Law 14-4601(gg), ORS 646A.570(18)), so a rule that asks a
# separate consent for "sensitive" asks it for "precise_location" too.
_SENSITIVE_KINDS = ("sensitive", "precise_location")
# Consent Mode types whose storage or data use amounts to "tracking or behavioural monitoring"
# (DPDP s. 9(3)): measuring, profiling or targeting an individual visitor.
_TRACKING_TYPES = frozenset(
    {
        "analytics_storage",
        "ad_storage",
        "ad_user_data",
        "ad_personalization",
        "personalization_storage",
    }
)
# The facts each exemption category needs declared, with the provision that demands them.
_CONDITIONS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "analytics": (
        (
            "improves_service_only",
            "Sch. A1 para 5(2)(a): the sole purpose is statistics about "
            "how the service is used, with a view to improving it",
        ),
        (
            "shared_only_to_improve",
            "Sch. A1 para 5(2)(b): the information is shared only to help make those improvements",
        ),
        (
            "provider_is_processor",
            "ICO guidance (Apr 2026): the provider acts as a processor, not a joint controller",
        ),
    ),
    "functionality": (),
    "security": (),
}


def separate_kind(rule: Rule, purpose: Purpose) -> str | None:
    """The separate-consent kind this purpose needs under the rule, or None."""
    kind = purpose.separate
    if kind is None:
        return None
    if kind in rule.separate_consent:
        return kind
    if kind in _SENSITIVE_KINDS and "sensitive" in rule.separate_consent:
        return kind
    return None


def targets_ads(purpose: Purpose) -> bool:
    """Targeted (personalised) advertising: what ``ad_personalization`` signals to Google."""
    return "ad_personalization" in purpose.consent_mode


def prohibited_by(rule: Rule, purpose: Purpose, minor: bool = False) -> str | None:
    """The kind of outright ban (``Rule.prohibited`` or, for a known minor, ``minor_prohibited``)
    that covers this purpose, or None. No consent makes a prohibited purpose lawful."""
    if purpose.essential:
        return None
    if purpose.sale_or_share:
        if "sale_of_sensitive" in rule.prohibited and purpose.separate in _SENSITIVE_KINDS:
            return "sale_of_sensitive"
        if "sale_of_precise_location" in rule.prohibited and purpose.separate == "precise_location":
            return "sale_of_precise_location"
    if minor and rule.minor_age:
        for kind in rule.minor_prohibited:
            if (
                (kind == "sale" and purpose.sale_or_share)
                or (kind == "targeted_ads" and targets_ads(purpose))
                or (kind == "tracking" and _TRACKING_TYPES.intersection(purpose.consent_mode))
            ):
                return f"minor:{kind}"
    return None


def is_minor(rule: Rule, age: int | None) -> bool:
    """Whether a site's age signal makes the visitor a known minor under the rule's bans."""
    return age is not None and age < rule.minor_age


def exemption_problems(exemption: Exemption | None, category: str) -> list[str]:
    """Why a purpose's declaration does not (yet) earn it the exemption ``category``."""
    if exemption is None:
        return [f'no [purposes.exemption] with category = "{category}"']
    if exemption.category != category:
        return [f"it claims the {exemption.category!r} exemption, not {category!r}"]
    return [
        f"{name} = true is not declared ({why})"
        for name, why in _CONDITIONS.get(category, ())
        if not getattr(exemption, name)
    ]


def is_exempt(rule: Rule, purpose: Purpose) -> bool:
    """Whether the rule exempts this purpose from consent (inform + easy objection instead).

    By fact, not by category (PECR Sch. A1; ICO guidance): the site must declare the facts the
    exception needs (``Purpose.exemption``), and the purpose must neither sell/share nor need a
    separate consent. A category the rule exempts then covers it when everything it maps is of
    that category's types; a purpose the site names in ``exempt_purposes`` needs only its
    declaration.
    """
    declared = purpose.exemption
    if not rule.exempt_purposes or declared is None:
        return False
    if purpose.sale_or_share or purpose.separate is not None:
        return False
    if exemption_problems(declared, declared.category):
        return False
    if purpose.id in rule.exempt_purposes and purpose.id not in rule.exempt_categories:
        return True  # the site named its own purpose
    types = rule.exempt_categories.get(declared.category, ())
    return (
        bool(types) and bool(purpose.consent_mode) and all(t in types for t in purpose.consent_mode)
    )
