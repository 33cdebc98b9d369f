"""The demo site's snippet config as the server builds it, without a server process."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gateway.core.model import UNKNOWN_REGION
from gateway.serving.gateway import Visitor, snippet_document
from gateway.serving.render import Renderer
from gateway.sites.catalog import load_site
from tests.helpers import shipped_rules

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "gateway" / "templates"
# Short names for the rule models the tests exercise.
RULE_IDS = {"gdpr": "gdpr", "ccpa": "ccpa", "notice": "au", "pipl": "pipl"}


def _toml_table(name: str, values: dict[str, str]) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return f"\n[{name}]\n" + "".join(
        f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in values.items()
    )


def demo_config(
    rule_name: str = "gdpr",
    *,
    record_url: str = "http://127.0.0.1:9/v1/sites/demo/consents",
    locale: str = "en",
    text_overrides: dict[str, str] | None = None,
    gpc: bool = False,
    theme: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What consent.js inlines for the demo site under a rule, through the real renderer.

    Text and theme overrides go into a copy of the demo site's site.toml, as a site would
    write them.
    """
    with tempfile.TemporaryDirectory() as tmp:
        site_dir = Path(tmp) / "demo"
        shutil.copytree(ROOT / "banners" / "demo", site_dir)
        extra = ""
        if text_overrides:
            extra += _toml_table("texts", text_overrides)
        if theme:
            extra += _toml_table("theme", theme)
        with (site_dir / "site.toml").open("a", encoding="utf-8") as f:
            f.write(extra)
        bundle = load_site(site_dir, ROOT / "locales", shipped_rules())
        rule = shipped_rules().rules[RULE_IDS[rule_name]]
        resolved = Renderer().resolve(bundle, rule, locale, gpc)
    visitor = Visitor(ip=None, region=UNKNOWN_REGION, gpc=gpc, language=locale, rule=rule)
    return snippet_document(resolved, visitor, record_url)


def demo_layers(rule_name: str = "gdpr", *, gpc: bool = False) -> dict[str, str]:
    """The rendered banner and preferences panel (a lazily loaded part) of the demo site."""
    bundle = load_site(ROOT / "banners" / "demo", ROOT / "locales", shipped_rules())
    rule = shipped_rules().rules[RULE_IDS[rule_name]]
    resolved = Renderer().resolve(bundle, rule, "en", gpc)
    return {"banner": resolved.html, "preferences": resolved.preferences_html}
