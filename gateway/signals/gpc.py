"""Global Privacy Control: the ``Sec-GPC`` request header, ``/.well-known/gpc.json``, its effect.

GPC asks not to sell or share personal data, nor use it for cross-context targeted ads. Rules
with ``gpc`` honour it by turning off every purpose marked ``sale_or_share``. It is not a
GDPR withdrawal of consent, so under a rule without ``gpc`` it changes nothing that was
consented to; under a rule with ``gpc_objects`` (UK) it is an objection to the purposes that
run on an exemption instead of consent, and turns those off.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence

from gateway.core.model import Rule, Site
from gateway.core.purposes import is_exempt, prohibited_by, separate_kind


def gpc_requested(values: Sequence[str]) -> bool:
    """Whether the ``Sec-GPC`` header values set GPC: only a value of exactly ``1`` counts."""
    if isinstance(values, str):  # a lone header value, not a list of them
        return values == "1"
    return "1" in values


def well_known(last_update: datetime.date) -> bytes:
    """The ``/.well-known/gpc.json`` body (serve as ``application/json``)."""
    return json.dumps({"gpc": True, "lastUpdate": last_update.isoformat()}).encode()


def honours(rule: Rule) -> bool:
    """Whether a GPC signal changes anything under the rule (an opt-out or an objection)."""
    return rule.gpc or rule.gpc_objects


def apply_gpc(rule: Rule, site: Site, choices: Mapping[str, bool]) -> dict[str, bool]:
    """The choices with every sale/share purpose off under a rule that honours GPC, and every
    exempt purpose off under a rule where GPC is an objection."""
    result = dict(choices)
    for purpose in site.purposes:
        if (rule.gpc and purpose.sale_or_share) or (rule.gpc_objects and is_exempt(rule, purpose)):
            result[purpose.id] = False
    return result


def default_choices(rule: Rule, site: Site, gpc: bool, minor: bool = False) -> dict[str, bool]:
    """Each purpose's state before the visitor chooses, for this rule, GPC and age signal.

    Essential purposes are on; a purpose the rule prohibits (for everyone, or for a known minor)
    is off; purposes the rule exempts (e.g. UK statistics, declared by fact) are on with an easy
    objection; a purpose whose kind needs a separate consent, or that maps a type the rule keeps
    opt-in, is off; the rest follow the rule's default (off under opt-in, on under opt-out and
    notice); then GPC turns sale/share purposes off (and exempt ones, where it is an objection).
    """
    choices: dict[str, bool] = {}
    for purpose in site.purposes:
        if purpose.essential:
            choices[purpose.id] = True
        elif prohibited_by(rule, purpose, minor):
            choices[purpose.id] = False
        elif is_exempt(rule, purpose):
            choices[purpose.id] = True
        elif separate_kind(rule, purpose) or any(
            t in rule.opt_in_types for t in purpose.consent_mode
        ):
            choices[purpose.id] = False
        else:
            choices[purpose.id] = rule.default_granted
    return apply_gpc(rule, site, choices) if gpc else choices
