"""Loads every site from ``banners/`` and ``locales/``, computes versions, swaps in valid edits."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from gateway.core.errors import ConfigError
from gateway.core.i18n import Negotiator
from gateway.core.jurisdictions import RuleTable, SiteRules
from gateway.core.model import Site
from gateway.sites import texts
from gateway.sites.gvl_store import load_gvl
from gateway.sites.sitefile import read_site
from gateway.sites.translations import SiteTranslations, load_site_translations, po_path
from gateway.standards.gvl import GlobalVendorList
from gateway.standards.issuing import Issuer

log = logging.getLogger("gateway.catalog")

# The gateway package (templates/ and the static files beside it are found from here).
PACKAGE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATES = PACKAGE_DIR / "templates"


def static_dir() -> Path:
    """static/ beside the package in a checkout; from the working directory when installed.

    Asked when needed, not at import: the working directory is the one the process runs in.
    """
    beside = PACKAGE_DIR.parent / "static"
    return beside if beside.is_dir() else Path.cwd() / "static"


def _hash_files(files: dict[str, Path]) -> hashlib._Hash:
    """A digest of files by their names (relative paths) and contents, in name order."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0")
        digest.update(files[name].read_bytes() + b"\0")
    return digest


def _named(paths: list[Path], root: Path) -> dict[str, Path]:
    return {str(path.relative_to(root)): path for path in paths}


def consent_revision(site: Site, rules: RuleTable) -> str:
    """Changes only when what is consented to changes: purposes, recipients, rule models."""
    material = {
        "purposes": [
            [
                p.id,
                p.essential,
                p.legal_basis,
                sorted(p.recipients),
                p.separate,
                p.sale_or_share,
                sorted(p.consent_mode),
                # What runs without consent on a UK exemption changes what the visitor is told.
                None if p.exemption is None else dataclasses.astuple(p.exemption),
            ]
            for p in site.purposes
        ],
        "rules": sorted(
            [
                rid,
                r.model,
                r.default_granted,
                sorted(r.separate_consent),
                sorted(r.exempt_purposes),
                sorted(r.opt_in_types),
            ]
            for rid, r in rules.rules.items()
        ),
        "overrides": site.rule_overrides,
    }
    if site.tcf is not None:
        # The vendors, and what each TCF purpose follows, are part of what is consented to
        # (the CMP's version or the vendor list's age are not).
        tcf = site.tcf
        material["tcf"] = [
            tcf.vendors, tcf.consent, tcf.legitimate_interest, tcf.special_features,
            [dataclasses.astuple(r) for r in tcf.restrictions], tcf.rules,
        ]  # fmt: skip
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()[:8]


def banner_version(
    site: Site,
    site_dir: Path,
    locales_dir: Path,
    rules: RuleTable,
    gvl: GlobalVendorList | None = None,
) -> str:
    """A content hash of everything a visitor of this site can see."""
    digest = _hash_files(_named([p for p in site_dir.rglob("*") if p.is_file()], site_dir))
    if site.tcf is not None and gvl is not None:  # the first layer names its vendors
        digest.update(b"gvl %d\0" % gvl.vendor_list_version)
    # Built-in templates and static files are named as in a checkout (gateway/templates/…,
    # static/…) whether they sit there or in an installed package and the working directory.
    defaults = _named(list(DEFAULT_TEMPLATES.glob("*.html")), PACKAGE_DIR.parent)
    static = static_dir()
    if static.is_dir():
        defaults |= _named([p for p in static.glob("*") if p.is_file()], static.parent)
    digest.update(_hash_files(defaults).digest())
    for locale in site.locales:
        path = po_path(locales_dir, locale, site.id)
        if path.exists():
            digest.update(locale.encode() + b"\0" + path.read_bytes())
    digest.update(orjson.dumps([texts.BASE_TEXTS, texts.DESCRIPTIONS]))
    digest.update(orjson.dumps(sorted((k, v.as_json()) for k, v in rules.rules.items())))
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class SiteBundle:
    """One published state of a site: what every request for it reads."""

    site: Site
    directory: Path
    banner_version: str
    consent_revision: str
    translations: SiteTranslations
    negotiator: Negotiator
    rules: SiteRules  # this site's rule per region: the shipped table with its overrides
    known_versions: frozenset[str] = field(default_factory=frozenset)
    # The imported Global Vendor List, for a site with [tcf] (gateway/sites/gvl_store.py).
    gvl: GlobalVendorList | None = None
    # The TC and GPP strings issued for this bundle's site and list, remembered (a reload's
    # new bundle starts with its own).
    issuer: Issuer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "issuer", Issuer(self.site, self.gvl))


def load_site(
    site_dir: Path, locales_dir: Path, rules: RuleTable, gvl: GlobalVendorList | None = None
) -> SiteBundle:
    """Read, validate and version one site; raises ConfigError naming file, key and hint."""
    site = read_site(site_dir)
    problems = rules.validate_overrides(
        site.rule_overrides, purpose_ids={p.id for p in site.purposes}
    )
    if problems:
        raise ConfigError(
            problems[0],
            where=f"{site_dir / 'site.toml'}: rules",
            hint="see the rule table in the README",
        )
    translations = load_site_translations(locales_dir, site.id, site.locales, site.default_locale)
    version = banner_version(site, site_dir, locales_dir, rules, gvl)
    return SiteBundle(
        site=site,
        directory=site_dir,
        banner_version=version,
        consent_revision=consent_revision(site, rules),
        rules=rules.for_site(site.rule_overrides),
        translations=translations,
        negotiator=Negotiator(site.locales, site.default_locale),
        known_versions=frozenset((version, *site.retained_versions)),
        gvl=gvl if site.tcf is not None else None,
    )


# Checks a loaded bundle further (e.g. that every template renders); raises ConfigError.
Validator = Callable[[SiteBundle], None]


def scan(
    banners_dir: Path, locales_dir: Path, rules: RuleTable, validate: Validator | None = None
) -> tuple[dict[str, SiteBundle], list[ConfigError]]:
    """Load every site folder; return the good ones and the errors of the others."""
    bundles: dict[str, SiteBundle] = {}
    errors: list[ConfigError] = []
    if not banners_dir.is_dir():
        return bundles, [
            ConfigError(
                "banners folder not found", where=str(banners_dir), hint="set GATEWAY_BANNERS_DIR"
            )
        ]
    gvl_error: ConfigError | None = None
    try:
        gvl = load_gvl(banners_dir)
    except ConfigError as exc:  # it stops the sites with [tcf] only
        gvl, gvl_error = None, exc
    for site_dir in sorted(p for p in banners_dir.iterdir() if p.is_dir()):
        if site_dir.name.startswith((".", "_")):
            continue
        try:
            bundle = load_site(site_dir, locales_dir, rules, gvl)
            if gvl_error is not None and bundle.site.tcf is not None:
                raise gvl_error
            if validate is not None:
                validate(bundle)
        except ConfigError as exc:
            errors.append(exc)
        else:
            bundles[bundle.site.id] = bundle
    if not bundles and not errors:
        errors.append(
            ConfigError(
                "no sites", where=str(banners_dir), hint="each site is a folder with a site.toml"
            )
        )
    return bundles, errors


class LiveCatalog:
    """The sites being served; a reload swaps in a new set only when all of it is valid."""

    def __init__(
        self,
        banners_dir: Path,
        locales_dir: Path,
        rules: RuleTable,
        validate: Validator | None = None,
    ) -> None:
        self.banners_dir = banners_dir
        self.locales_dir = locales_dir
        self.rules = rules
        self.validate = validate
        self._bundles: Mapping[str, SiteBundle] = {}
        self.last_error: str | None = None
        self.generation = 0

    def load(self) -> None:
        """First load: every site must be valid, or start-up fails."""
        bundles, errors = scan(self.banners_dir, self.locales_dir, self.rules, self.validate)
        if errors:
            raise errors[0]
        self._swap(bundles)

    def reload(self) -> bool:
        """Re-read everything; keep serving the last good state if anything is invalid."""
        try:
            bundles, errors = scan(self.banners_dir, self.locales_dir, self.rules, self.validate)
        except (OSError, ValueError) as exc:
            errors = [ConfigError(str(exc))]
            bundles = {}
        if errors:
            self.last_error = str(errors[0])
            log.error("reload refused, still serving the last good version: %s", errors[0])
            return False
        old = {k: b.banner_version for k, b in self._bundles.items()}
        self._swap(bundles)
        changed = {k: b.banner_version for k, b in bundles.items()} != old
        if changed:
            log.info(
                "reloaded sites: %s",
                ", ".join(f"{k}@{b.banner_version}" for k, b in bundles.items()),
            )
        return True

    def _swap(self, bundles: Mapping[str, SiteBundle]) -> None:
        # Versions published earlier stay acceptable for records until the process restarts.
        previous = self._bundles
        merged: dict[str, SiteBundle] = {}
        for site_id, bundle in bundles.items():
            old = previous.get(site_id)
            if old is not None and old.banner_version != bundle.banner_version:
                bundle = dataclasses.replace(
                    bundle, known_versions=bundle.known_versions | old.known_versions
                )
            merged[site_id] = bundle
        self._bundles = merged
        self.last_error = None
        self.generation += 1

    def get(self, site_id: str) -> SiteBundle | None:
        return self._bundles.get(site_id)

    def __iter__(self) -> Iterator[SiteBundle]:
        return iter(list(self._bundles.values()))

    def __len__(self) -> int:
        return len(self._bundles)
