"""The README's jurisdiction table, generated from the rule data."""

from __future__ import annotations

from gateway.core.jurisdictions import RuleTable
from gateway.core.model import Rule


def _yes(flag: bool) -> str:
    return "yes" if flag else "—"


def _minors(rule: Rule) -> str:
    if not rule.minor_age or not rule.minor_prohibited:
        return "—"
    return f"under {rule.minor_age}: no {', '.join(rule.minor_prohibited)}".replace("_", " ")


def rule_table_markdown(table: RuleTable) -> str:
    """The README table: region(s) → rule → model and flags, generated from the data."""
    by_rule: dict[str, list[str]] = {rid: [] for rid in table.rules}
    for code, rid in table.regions.items():
        by_rule[rid].append(code)
    for day, code, rid in table.dated:
        by_rule[rid].append(f"{code} (from {day.isoformat()})")
    by_rule[table.strictest_id].append("anything else, unknown")
    us = table.regions.get("US")
    if us:
        by_rule[us].append("US-* not listed (and dated states until their date)")
    lines = [
        "| rule | regions | model | optional on by default | GPC | reject on first layer "
        "| do-not-sell link | limit-sensitive link | separate consent | exempt (objection) "
        "| prohibited | minors (site's age signal) | age | re-ask after (months / after refusal) |",
        "|---" * 14 + "|",
    ]
    for rid, rule in table.rules.items():
        gpc = "yes, as an objection" if rule.gpc_objects and not rule.gpc else _yes(rule.gpc)
        opt_in = f"{_yes(rule.default_granted)}"
        if rule.opt_in_types:
            opt_in += f" (not {', '.join(rule.opt_in_types)})"
        age = "per country" if rule.national_ages else (rule.age_of_consent or "—")
        lines.append(
            f"| `{rid}` | {', '.join(by_rule[rid])} | {rule.model} | {opt_in} "
            f"| {gpc} | {_yes(rule.reject_on_first_layer)} "
            f"| {_yes(rule.do_not_sell_link)} | {_yes(rule.limit_sensitive_link)} "
            f"| {', '.join(rule.separate_consent) or '—'} "
            f"| {', '.join(rule.exempt_purposes) or '—'} "
            f"| {', '.join(rule.prohibited).replace('_', ' ') or '—'} "
            f"| {_minors(rule)} "
            f"| {age} "
            f"| {rule.reprompt_months} / {rule.reprompt_after_refusal_months} |"
        )
    lines.append("")
    lines.extend(
        f"- `{rid}`: {rule.name}. Law: {table.sources[rid][0]}. Guidance: {table.sources[rid][1]}."
        for rid, rule in table.rules.items()
    )
    return "\n".join(lines) + "\n"
