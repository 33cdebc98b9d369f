"""Banner versions: publishing each version's exact texts to the store, and listing them
(`consent-gateway versions SITE`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.core.errors import ConfigError
from gateway.core.jurisdictions import load_rules
from gateway.core.settings import Settings
from gateway.sinks import store_for
from gateway.sinks.base import Store
from gateway.sinks.sqlite import FILE_NAME
from gateway.sites.catalog import SiteBundle, load_site
from gateway.sites.gvl_store import load_gvl
from gateway.sites.texts import DESCRIPTIONS, source_texts

log = logging.getLogger("gateway.versions")


def published_texts(bundle: SiteBundle) -> dict[str, dict[str, Any]]:
    """The exact texts of every locale and rule model: what a record's version resolves to."""
    site = bundle.site
    out: dict[str, dict[str, Any]] = {}
    for locale in site.locales:
        tr = bundle.translations.get(locale)
        out[locale] = {
            "texts": {
                model: {k: tr.gettext(v) for k, v in source_texts(model, site.texts).items()}
                for model in DESCRIPTIONS
            },
            "purposes": {
                p.id: {"name": tr.gettext(p.name), "description": tr.gettext(p.description)}
                for p in site.purposes
            },
        }
    return out


async def publish_current(bundles: Iterable[SiteBundle], store: Store | None) -> None:
    """Store the texts of every site's current version (idempotent per version).

    Never raises: the store may be down, and serving and recording go on without it.
    """
    if store is None:
        log.info("no readable store is configured: banner versions are not published")
        return
    for bundle in bundles:
        try:
            await store.publish_version(
                bundle.site.id,
                bundle.banner_version,
                bundle.consent_revision,
                published_texts(bundle),
            )
        except Exception:  # the forwarder's backlog is what matters, not this copy
            log.exception("could not publish %s@%s", bundle.site.id, bundle.banner_version)


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
            current = load_site(
                site_dir, settings.locales_dir, load_rules(), load_gvl(settings.banners_dir)
            )
        except ConfigError as exc:
            notes.append(f"the site's files do not load ({exc}); listing the store only")
    else:
        notes.append(f"no folder {site_dir}; listing the store only")
    stored = await stored_versions(settings, site)
    return notes + format_versions(site, stored, current)
