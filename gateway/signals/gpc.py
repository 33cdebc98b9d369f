"""Global Privacy Control: the ``Sec-GPC`` request header, ``/.well-known/gpc.json``, its effect.

GPC asks not to sell or share personal data, nor use it for cross-context targeted ads. Rules
with ``gpc`` honour it by turning off every purpose marked ``sale_or_share``. It is not a
GDPR withdrawal of consent, so under a rule without ``gpc`` it changes nothing.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence

from gateway.core.jurisdictions import is_exempt
from gateway.core.model import Rule, Site


def gpc_requested(values: Sequence[str]) -> bool:
    """Whether the ``Sec-GPC`` header values set GPC: only a value of exactly ``1`` counts."""
    if isinstance(values, str):  # a lone header value, not a list of them
        return values == "1"
    return "1" in values


def well_known(last_update: datetime.date) -> bytes:
    """The ``/.well-known/gpc.json`` body (serve as ``application/json``)."""
    return json.dumps({"gpc": True, "lastUpdate": last_update.isoformat()}).encode()


def apply_gpc(rule: Rule, site: Site, choices: Mapping[str, bool]) -> dict[str, bool]:
    """The choices with every sale/share purpose off, under a rule that honours GPC."""
    result = dict(choices)
    if rule.gpc:
        for purpose in site.purposes:
            if purpose.sale_or_share:
                result[purpose.id] = False
    return result


def default_choices(rule: Rule, site: Site, gpc: bool) -> dict[str, bool]:
    """Each purpose's state before the visitor chooses, for this rule and GPC signal.

    Essential purposes are on; purposes the rule exempts (e.g. UK statistics) are on with an
    easy objection; a purpose whose kind needs a separate consent under the rule is off; the
    rest follow the rule's default (off under opt-in, on under opt-out and notice); then GPC
    turns sale/share purposes off where the rule honours it.
    """
    choices: dict[str, bool] = {}
    for purpose in site.purposes:
        if purpose.essential or is_exempt(rule, purpose):
            choices[purpose.id] = True
        elif purpose.separate is not None and purpose.separate in rule.separate_consent:
            choices[purpose.id] = False
        else:
            choices[purpose.id] = rule.default_granted
    return apply_gpc(rule, site, choices) if gpc else choices
