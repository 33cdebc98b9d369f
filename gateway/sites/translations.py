"""Gettext catalogs of a site: load ``.po`` files, fall back string by string, report coverage."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import PoFileError, read_po
from babel.support import NullTranslations, Translations

from gateway.core.errors import ConfigError

# Placeholders that must survive translation unchanged: %(name)s, %s, {name}.
PLACEHOLDER = re.compile(r"%\([a-zA-Z_]\w*\)[sdif]|%[sdif]|\{[a-zA-Z_]\w*\}")
TAG = re.compile(r"<\s*(/?)\s*([a-zA-Z][a-zA-Z0-9]*)([^>]*)>")
ALLOWED_TAGS = {"a", "em", "strong", "b", "i", "br"}
ALLOWED_ATTRS = re.compile(r'^(\s+(href|target|rel)="[^"<>]*")*\s*/?$')


def po_path(locales_dir: Path, locale: str, domain: str) -> Path:
    return locales_dir / locale / "LC_MESSAGES" / f"{domain}.po"


def read_catalog(path: Path, locale: str) -> Catalog:
    """Parse one .po file; a syntax error is a ConfigError naming the file."""
    try:
        with path.open("rb") as fp:
            return read_po(fp, locale=locale, abort_invalid=True)
    except (PoFileError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"invalid catalog: {exc}",
            where=str(path),
            hint="fix the .po syntax (msgfmt --check shows the line)",
        ) from exc


def to_translations(catalog: Catalog, domain: str) -> Translations:
    """Compile in memory exactly as `i18n compile` would (fuzzy entries are skipped)."""
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return Translations(fp=buf, domain=domain)


@dataclass
class LocaleReport:
    """What `check` says about one locale of one site."""

    locale: str
    total: int = 0
    translated: int = 0
    fuzzy: list[str] = field(default_factory=list)
    untranslated: list[str] = field(default_factory=list)
    untranslated_plurals: list[str] = field(default_factory=list)
    placeholder_mismatch: list[str] = field(default_factory=list)
    unsafe_html: list[str] = field(default_factory=list)
    missing_file: bool = False

    @property
    def coverage(self) -> float:
        return 1.0 if self.total == 0 else self.translated / self.total

    @property
    def errors(self) -> list[str]:
        """Problems that make a catalog unpublishable (the rest are warnings)."""
        out = [f"placeholders differ from the source in {m!r}" for m in self.placeholder_mismatch]
        out += [f"HTML outside the allow-list in {m!r}" for m in self.unsafe_html]
        return out

    @property
    def warnings(self) -> list[str]:
        out = [f"fuzzy (not served until reviewed): {m!r}" for m in self.fuzzy]
        out += [
            f"untranslated (falls back to the default language): {m!r}" for m in self.untranslated
        ]
        out += [f"untranslated plural form: {m!r}" for m in self.untranslated_plurals]
        return out


def _unsafe_html(text: str) -> bool:
    for match in TAG.finditer(text):
        name = match.group(2).lower()
        if name not in ALLOWED_TAGS or not ALLOWED_ATTRS.match(match.group(3)):
            return True
        if 'href="javascript:' in match.group(3).lower():
            return True
    return False


def review(catalog: Catalog, msgids: Iterable[str]) -> LocaleReport:
    """Coverage, fuzzy, plurals, placeholders and HTML of the msgids a site uses."""
    report = LocaleReport(locale=str(catalog.locale))
    for msgid in dict.fromkeys(msgids):
        report.total += 1
        message = catalog.get(msgid)
        if message is None or not message.string:
            report.untranslated.append(msgid)
            continue
        if message.fuzzy:
            report.fuzzy.append(msgid)
            continue
        raw = message.string
        strings: tuple[str, ...] = (raw,) if isinstance(raw, str) else tuple(raw)
        if message.pluralizable and not all(strings):
            report.untranslated_plurals.append(msgid)
            continue
        report.translated += 1
        source = set(PLACEHOLDER.findall(msgid))
        if any(set(PLACEHOLDER.findall(s)) != source for s in strings):
            report.placeholder_mismatch.append(msgid)
        if any(_unsafe_html(s) for s in strings):
            report.unsafe_html.append(msgid)
    return report


@dataclass(frozen=True)
class SiteTranslations:
    """A site's gettext objects per locale, each falling back to the default locale's."""

    domain: str
    default_locale: str
    by_locale: dict[str, NullTranslations]
    catalogs: dict[str, Catalog]

    def get(self, locale: str) -> NullTranslations:
        return self.by_locale.get(locale) or self.by_locale[self.default_locale]

    def has(self, locale: str, msgid: str) -> bool:
        """True when the locale's own catalog translates msgid (no fallback involved)."""
        catalog = self.catalogs.get(locale)
        if catalog is None:
            return locale == self.default_locale
        message = catalog.get(msgid)
        return bool(message is not None and message.string and not message.fuzzy)


def load_site_translations(
    locales_dir: Path, domain: str, locales: Iterable[str], default_locale: str
) -> SiteTranslations:
    """Load each locale's catalog; a missing default-locale catalog means msgids are the text."""
    catalogs: dict[str, Catalog] = {}
    for locale in locales:
        path = po_path(locales_dir, locale, domain)
        if path.exists():
            catalogs[locale] = read_catalog(path, locale)
        elif locale != default_locale:
            raise ConfigError(
                f"no catalog for locale {locale!r}",
                where=str(path),
                hint=f"run `consent-gateway i18n init --site {domain} "
                f"--locale {locale}` or drop it from `locales`",
            )
    default: NullTranslations = (
        to_translations(catalogs[default_locale], domain)
        if default_locale in catalogs
        else NullTranslations()
    )
    by_locale: dict[str, NullTranslations] = {default_locale: default}
    for locale, catalog in catalogs.items():
        if locale == default_locale:
            continue
        translations = to_translations(catalog, domain)
        translations.add_fallback(default)
        by_locale[locale] = translations
    return SiteTranslations(domain, default_locale, by_locale, catalogs)
