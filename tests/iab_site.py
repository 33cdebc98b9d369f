"""A copy of the demo site with [tcf] and [gpp], and the vendor list fixture imported."""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.core.settings import Settings
from gateway.sites.gvl_store import import_gvl
from tests.helpers import ROOT, editable_settings

GVL_FILE = ROOT / "tests" / "data" / "gvl" / "vendor-list.json"
CMP_ID = 300
VENDORS = (28, 755, 793)
TCF_TOML = f"""
[tcf]
cmp_id = {CMP_ID}
cmp_version = 2
publisher_country = "DE"
vendors = [28, 755, 793]
gvl_max_age_days = 3650

[tcf.consent]
marketing = [1, 2, 3, 4, 7]
analytics = [1, 8, 9]
personalization = [1, 5, 6]

[tcf.legitimate_interest]
analytics = [9, 10]
marketing = [2, 7]

[tcf.special_features]
marketing = [1]

[[tcf.restrictions]]
purpose = 2
type = "require_consent"
vendors = [755]

[gpp]
"""


def tcf_settings(tmp_path: Path, extra: str = TCF_TOML, **changes: object) -> Settings:
    """Settings on a demo copy whose site.toml gets ``extra``, with the fixture GVL imported;
    the site offers English and German only (the German catalog lacks the TCF texts)."""
    settings = editable_settings(tmp_path, **changes)
    toml = settings.banners_dir / "demo" / "site.toml"
    text = toml.read_text(encoding="utf-8").replace(
        'locales = ["en", "de", "fr", "es", "it", "nl", "pt_BR", "zh_Hans", "zh_Hant", "ja", '
        '"ko", "ar"]',
        'locales = ["en", "de"]',
    )
    toml.write_text(text + extra, encoding="utf-8")
    import_gvl(settings.banners_dir, GVL_FILE)
    return settings


def copy_gvl(target: Path) -> Path:
    path = target / "vendor-list.json"
    shutil.copy(GVL_FILE, path)
    return path
