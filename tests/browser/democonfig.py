"""A demo-site snippet config built without the server: real templates, texts and Snippet."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, PrefixLoader, StrictUndefined

from gateway.model import CONSENT_MODE_TYPES, Rule
from gateway.texts import source_texts

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "gateway" / "templates"
SITE_TOML = ROOT / "banners" / "demo" / "site.toml"

RULES: dict[str, Rule] = {
    "gdpr": Rule(id="gdpr", model="opt-in", name="GDPR", separate_consent=()),
    "ccpa": Rule(
        id="ccpa", model="opt-out", name="CCPA", default_granted=True, gpc=True,
        do_not_sell_link=True, limit_sensitive_link=True,
    ),
    "notice": Rule(id="au", model="notice", name="Notice", default_granted=True),
    "pipl": Rule(id="pipl", model="opt-in", separate_consent=("third_party", "cross_border")),
}


def environment() -> Environment:
    """The templates as a site sees them: `default:` prefix, autoescape, StrictUndefined."""
    return Environment(
        loader=PrefixLoader({"default": FileSystemLoader(str(TEMPLATES))}, delimiter=":"),
        autoescape=True,
        undefined=StrictUndefined,
    )


def demo_config(
    rule_name: str = "gdpr",
    *,
    record_url: str = "http://127.0.0.1:9/v1/sites/demo/consents",
    language: str = "en",
    direction: str = "ltr",
    text_overrides: dict[str, str] | None = None,
    gpc: bool = False,
    revision: str = "rev1",
    theme: dict[str, str] | None = None,
    env: Environment | None = None,
) -> dict[str, Any]:
    """The config the server would inline into consent.js for the demo site under ``rule_name``."""
    rule = RULES[rule_name]
    site = tomllib.loads(SITE_TOML.read_text(encoding="utf-8"))
    texts = source_texts(rule.model, text_overrides or {})
    purposes = [
        {
            "id": p["id"],
            "name": p["name"],
            "description": p["description"],
            "essential": p.get("essential", False),
            "default": p.get("essential", False) or (
                rule.default_granted and not (gpc and rule.gpc and p.get("sale_or_share", False))
            ),
            "separate": p.get("separate") if p.get("separate") in rule.separate_consent else None,
            "sale_or_share": p.get("sale_or_share", False),
            "recipients": p.get("recipients", []),
            "retention": p.get("retention", ""),
            "cookies": p.get("cookies", []),
            "consent_mode": p.get("consent_mode", []),
        }
        for p in site["purposes"]
    ]
    site_info = {
        "id": "demo",
        "name": site["name"],
        "controller": site["controller"],
        "contact": site["contact"],
        "privacy_policy_url": site["privacy_policy_url"],
    }
    context = {
        "site": site_info,
        "rule": rule.as_json(),
        "texts": texts,
        "purposes": purposes,
        "language": language,
        "dir": direction,
        "theme": theme or {},
        "gpc": gpc and rule.gpc,
    }
    env = env or environment()
    html = {name: env.get_template(f"default:{name}.html").render(context)
            for name in ("banner", "preferences")}
    granted = "granted" if rule.default_granted else "denied"
    mode = {t: granted for t in CONSENT_MODE_TYPES}
    mode["security_storage"] = "granted"
    return {
        "site": "demo",
        "banner_version": "v-test",
        "consent_revision": revision,
        "region": {"country": None, "subdivision": None, "source": "unknown"},
        "language": language,
        "dir": direction,
        "rule": rule.as_json(),
        "purposes": purposes,
        "texts": texts,
        "consent_mode": {"default": mode, "wait_for_update": 500},
        "gpc": gpc,
        "record_url": record_url,
        "cookie": {"name": "cg_consent", "domain": "", "max_age_days": 395,
                   "reload_on_withdraw": True},
        "html": html,
        "theme": theme or {},
    }
