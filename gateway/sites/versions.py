"""`consent-gateway versions SITE`: the published banner versions of a site, from the store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.core.errors import ConfigError
from gateway.core.jurisdictions import load_rules
from gateway.core.settings import Settings
from gateway.sinks import store_for
from gateway.sinks.sqlite import FILE_NAME
from gateway.sites.catalog import SiteBundle, load_site


def format_versions(
    site_id: str, stored: Sequence[Mapping[str, Any]], current: SiteBundle | None
) -> list[str]:
    """One line per version, newest first; marks the current one and consent changes."""
    lines = []
    if current is not None:
        lines.append(
            f"site {site_id}: current banner_version {current.banner_version}, "
            f"consent_revision {current.consent_revision}"
        )
    if not stored:
        lines.append(
            "no published versions yet (the gateway publishes on start and on every reload)"
        )
        return lines
    lines.append(f"{'banner_version':<14}  {'consent_revision':<16}  published_at")
    for index, row in enumerate(stored):
        version = str(row["banner_version"])
        revision = str(row["consent_revision"])
        marks = []
        if current is not None and version == current.banner_version:
            marks.append("current")
        older = stored[index + 1] if index + 1 < len(stored) else None
        if older is not None and older["consent_revision"] != revision:
            marks.append("consent changed: visitors are asked again")
        suffix = f"  ({'; '.join(marks)})" if marks else ""
        lines.append(f"{version:<14}  {revision:<16}  {row['published_at']}{suffix}")
    if current is not None and all(r["banner_version"] != current.banner_version for r in stored):
        lines.append(
            f"the current version {current.banner_version} is not published yet: start "
            "the gateway or POST /admin/v1/reload"
        )
    return lines


async def stored_versions(settings: Settings, site_id: str) -> list[dict[str, Any]]:
    """The store's versions of a site, newest first: banner_version, consent_revision, date."""
    if not settings.store_url and not (settings.data_dir / FILE_NAME).exists():
        return []  # the embedded store does not exist until the gateway first runs
    store = store_for(settings)
    await store.open()
    try:
        return await store.list_versions(site_id)
    finally:
        await store.close()


async def list_versions(settings: Settings, site: str) -> list[str]:
    """Lines for the CLI: the current version from banners/ and what the store has published."""
    current: SiteBundle | None = None
    notes = []
    site_dir = settings.banners_dir / site
    if site_dir.is_dir():
        try:
            current = load_site(site_dir, settings.locales_dir, load_rules())
        except ConfigError as exc:
            notes.append(f"the site's files do not load ({exc}); listing the store only")
    else:
        notes.append(f"no folder {site_dir}; listing the store only")
    stored = await stored_versions(settings, site)
    return notes + format_versions(site, stored, current)
