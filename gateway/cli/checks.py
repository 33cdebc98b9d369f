"""`consent-gateway check`: settings, sites, templates, catalogs and the geo database, explained."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from babel.messages.catalog import Catalog

from gateway.cli.iab_checks import check_iab
from gateway.core.errors import ConfigError
from gateway.core.jurisdictions import load_rules
from gateway.core.purposes import exemption_problems
from gateway.core.settings import Settings
from gateway.rights.policy import load_policies, site_rights
from gateway.serving.validation import Finding, rules_of, template_findings
from gateway.sites import i18n_workflow
from gateway.sites.catalog import DEFAULT_TEMPLATES, SiteBundle, scan
from gateway.sites.translations import po_path, review

MIN_TOKEN_LENGTH = 16
SHOWN_MSGIDS = 3  # untranslated msgids quoted per locale; the .po editor shows the rest


@dataclass
class CheckReport:
    """Everything `check` found; errors make the command exit 1, warnings do not."""

    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def error(self, where: str, message: str, hint: str = "") -> None:
        self.errors.append(Finding(where, message, hint))

    def warn(self, where: str, message: str, hint: str = "") -> None:
        self.warnings.append(Finding(where, message, hint))

    def lines(self) -> list[str]:
        out = list(self.notes)
        out += [w.line("warning") for w in self.warnings]
        out += [e.line("error") for e in self.errors]
        status = "FAILED" if self.errors else "ok"
        out.append(f"{status}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return out


def _short(msgid: str) -> str:
    return repr(msgid if len(msgid) <= 60 else msgid[:57] + "...")


def check_settings(settings: Settings, report: CheckReport) -> None:
    if not settings.banners_dir.is_dir():
        report.error(
            str(settings.banners_dir),
            "banners folder not found",
            "set GATEWAY_BANNERS_DIR or run from the project folder",
        )
    if not settings.locales_dir.is_dir():
        report.warn(
            str(settings.locales_dir),
            "locales folder not found: every visitor sees the default language",
            "set GATEWAY_LOCALES_DIR",
        )
    if not settings.identity_key and settings.store_url:
        report.warn(
            "GATEWAY_IDENTITY_KEY",
            "empty: identity hashes are keyed by a secret kept in the central store itself, so "
            "a copy of the database can test guessed e-mail addresses against them",
            "set the same 32+ byte secret on every node",
        )
    if not settings.public_url and not settings.public_hosts:
        report.warn(
            "GATEWAY_PUBLIC_URL",
            "neither it nor GATEWAY_PUBLIC_HOSTS is set: built URLs (the snippet's record URL, "
            "links in e-mails) are relative, and a link in an e-mail cannot be",
            "set GATEWAY_PUBLIC_URL to the address visitors reach, e.g. https://consent.example.com",
        )
    if not settings.admin_token:
        report.notes.append("admin API disabled (GATEWAY_ADMIN_TOKEN is empty)")
    elif len(settings.admin_token) < MIN_TOKEN_LENGTH:
        report.warn(
            "GATEWAY_ADMIN_TOKEN",
            f"shorter than {MIN_TOKEN_LENGTH} characters",
            "use `python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
        )
    try:
        from gateway.sinks import open_sinks

        open_sinks(settings)
    except ConfigError as exc:
        report.error(exc.where or "settings", exc.message, exc.hint)


def check_geo(settings: Settings, report: CheckReport) -> None:
    from gateway.geo.locator import Locator

    locator = Locator(settings)
    try:
        locator.load()
    except ConfigError as exc:
        report.error(exc.where or str(settings.geoip_path), exc.message, exc.hint)
        return
    info = locator.database_info()
    locator.close()
    if not info.get("loaded"):
        report.warn(
            "GATEWAY_GEOIP_DB",
            "no geo database: regions come from trusted CDN "
            "headers only, others get the strictest rule",
            "run `consent-gateway geo build` or set GATEWAY_GEOIP_DB",
        )
    else:
        details = ", ".join(f"{k} {v}" for k, v in info.items() if k != "loaded")
        report.notes.append(f"geo database: {details}")


def builtin_templates() -> list[str]:
    """The built-in templates a site may override, by file name."""
    return sorted(p.name for p in DEFAULT_TEMPLATES.glob("*.html"))


def check_templates(bundle: SiteBundle, report: CheckReport) -> None:
    for path in sorted(bundle.directory.rglob("*.html")):
        if path.relative_to(bundle.directory).as_posix() not in builtin_templates():
            report.warn(
                str(path),
                f"not one of {', '.join(builtin_templates())}: used only if "
                "another template includes it",
                "to change a built-in template, use its exact file name",
            )
    report.errors.extend(template_findings(bundle))


def _review_locale(
    bundle: SiteBundle,
    locale: str,
    catalog: Catalog,
    msgids: list[str],
    path: Path,
    report: CheckReport,
) -> str:
    result = review(catalog, msgids)
    site = bundle.site
    where = str(path)
    is_default = locale == site.default_locale
    for msgid in result.fuzzy:
        report.warn(
            where,
            f"fuzzy entry {_short(msgid)}: compile skips it and visitors see "
            f"the {site.default_locale!r} text",
            "review it, then clear the fuzzy flag",
        )
    for msgid in result.untranslated_plurals:
        report.warn(
            where, f"plural forms missing in {_short(msgid)}", "fill every msgstr[n] of the entry"
        )
    for msgid in result.placeholder_mismatch:
        report.error(
            where,
            f"placeholders differ from the source in {_short(msgid)}",
            "keep %(name)s / {name} exactly as in the msgid",
        )
    for msgid in result.unsafe_html:
        report.error(
            where,
            f"HTML outside the allow-list in {_short(msgid)}",
            "only <a href>, <em>, <strong>, <b>, <i> and <br> are allowed",
        )
    stale = [m for m in msgids if catalog.get(m) is None]
    if stale:
        report.warn(
            where,
            f"{len(stale)} msgid(s) missing from the catalog, e.g. {_short(stale[0])}",
            f"run `consent-gateway i18n extract --site {site.id}` "
            f"and `consent-gateway i18n update --site {site.id}`",
        )
    empty = [m for m in result.untranslated if m not in stale]
    if empty and not is_default:
        quoted = ", ".join(_short(m) for m in empty[:SHOWN_MSGIDS])
        more = f" and {len(empty) - SHOWN_MSGIDS} more" if len(empty) > SHOWN_MSGIDS else ""
        report.warn(
            where,
            f"{len(empty)} untranslated: {quoted}{more}",
            f"visitors see the {site.default_locale!r} text for these",
        )
    if is_default:
        return f"  {locale}: default language ({len(msgids)} messages)"
    parts = [f"{result.coverage:.0%} translated ({result.translated}/{result.total})"]
    parts += [
        f"{len(v)} {k}"
        for k, v in (("fuzzy", result.fuzzy), ("untranslated", result.untranslated))
        if v
    ]
    return f"  {locale}: " + ", ".join(parts)


def check_translations(settings: Settings, bundle: SiteBundle, report: CheckReport) -> None:
    site = bundle.site
    msgids = i18n_workflow.used_msgids(site, bundle.directory)
    for locale in site.locales:
        catalog = bundle.translations.catalogs.get(locale)
        path = po_path(settings.locales_dir, locale, site.id)
        if catalog is None:
            report.notes.append(f"  {locale}: default language, source texts (no catalog)")
            continue
        report.notes.append(_review_locale(bundle, locale, catalog, msgids, path, report))
    for locale, path in i18n_workflow.catalogs_of(settings, site.id):
        if locale not in site.locales:
            report.warn(
                str(path),
                f"locale {locale!r} has a catalog but is not offered",
                f"add it to `locales` in {bundle.directory / 'site.toml'}",
            )
    pot = i18n_workflow.pot_path(settings.locales_dir, site.id)
    if pot.exists():
        try:
            template = i18n_workflow.read_template(settings, site)
        except ConfigError as exc:
            report.warn(exc.where, exc.message, exc.hint)
            return
        missing = [m for m in msgids if template.get(m) is None]
        if missing:
            report.warn(
                str(pot),
                f"the template lacks {len(missing)} of the site's texts, e.g. {_short(missing[0])}",
                f"run `consent-gateway i18n extract --site {site.id}`",
            )


def run_checks(settings: Settings) -> CheckReport:
    """Validate everything a deployment reads; each finding names file, key and a hint."""
    report = CheckReport()
    check_settings(settings, report)
    check_geo(settings, report)
    if not settings.banners_dir.is_dir():
        return report
    bundles, errors = scan(settings.banners_dir, settings.locales_dir, load_rules())
    for exc in errors:
        report.error(exc.where, exc.message, exc.hint)
    for bundle in bundles.values():
        site = bundle.site
        prefs = site.preferences
        report.notes.append(
            f"site {site.id}: banner_version {bundle.banner_version}, consent_revision "
            f"{bundle.consent_revision}, {len(site.purposes)} purposes, "
            f"{len(site.locales)} locales, {len(prefs.channels)} channels, "
            f"{len(prefs.topics)} topics, {len(prefs.product_lines)} product lines"
        )
        check_templates(bundle, report)
        check_translations(settings, bundle, report)
        check_exemptions(bundle, report)
        check_notice_languages(bundle, report)
        check_rights(settings, bundle, report)
        check_iab(bundle, report)
    return report


def check_notice_languages(bundle: SiteBundle, report: CheckReport) -> None:
    """A rule that lets visitors read the notice in a language of their choice (DPDP s. 5(3))
    needs the site to offer one of those languages besides English."""
    site = bundle.site
    offered = {locale.split("_")[0] for locale in site.locales}
    for rule in rules_of(bundle):
        choices = set(rule.notice_languages) - {"en"}
        if choices and not offered & choices:
            report.warn(
                str(bundle.directory / "site.toml") + ": locales",
                f"visitors under rule {rule.id} may ask for the notice in one of "
                f"{', '.join(sorted(choices))}; this site offers none of them",
                "add such a locale and its catalog (DPDP Act s. 5(3), binding from 13 May 2027)",
            )


def check_exemptions(bundle: SiteBundle, report: CheckReport) -> None:
    """UK exemptions by fact (PECR Sch. A1; ICO guidance): what each claim lacks, and which
    purposes look exempt by category but, undeclared, need consent where a rule exempts."""
    site = bundle.site
    where = str(bundle.directory / "site.toml")
    categories = bundle.rules.table.exempt_categories
    rules = rules_of(bundle)
    for index, purpose in enumerate(site.purposes):
        declared = purpose.exemption
        if declared is not None:
            label = f"{where}: purposes[{index}].exemption"
            for problem in exemption_problems(declared, declared.category):
                report.error(
                    label,
                    f"{purpose.id} claims the {declared.category} exemption but {problem}",
                    "until every fact is declared the purpose needs consent like any other",
                )
            types = categories.get(declared.category, ())
            outside = [t for t in purpose.consent_mode if t not in types]
            if outside or not purpose.consent_mode:
                report.error(
                    label,
                    f"{purpose.id} maps {outside or 'no Consent Mode type'}, outside the "
                    f"{declared.category} exemption ({', '.join(types)})",
                    "split what the exception covers into a purpose of its own",
                )
            continue
        exempting = sorted(
            {
                rule.id.split("+")[0]
                for rule in rules
                for category in rule.exempt_purposes
                if purpose.consent_mode
                and all(t in categories.get(category, ()) for t in purpose.consent_mode)
            }
        )
        if exempting and not purpose.essential:
            report.warn(
                f"{where}: purposes[{index}]",
                f"{purpose.id} needs consent under {', '.join(exempting)}: an exemption is "
                "claimed by fact, not by category",
                'declare [purposes.exemption] category = "…" and its facts if they are true',
            )


def check_rights(
    settings: Settings,
    bundle: SiteBundle,
    report: CheckReport,
    env: Mapping[str, str] | None = None,
) -> None:
    """The site's [rights] table, its downstream systems' secrets, and e-mail verification."""
    where = f"{bundle.directory / 'site.toml'}: [rights]"
    try:
        rights = site_rights(load_policies(), bundle.site.rights, where)
    except ConfigError as exc:
        report.error(exc.where, exc.message, exc.hint)
        return
    env = os.environ if env is None else env
    for system in rights.systems:
        if not env.get(system.secret_env):
            report.warn(
                where,
                f"downstream system {system.name!r}: {system.secret_env} is not set",
                "its confirmations are refused until the variable holds the shared secret",
            )
    if not settings.smtp_url:
        report.warn(
            "GATEWAY_SMTP_URL",
            f"site {bundle.site.id}: e-mail verification of rights requests is off",
            "set an SMTP URL so that customers without a receipt can verify by code",
        )
