"""The gettext workflow over ``locales/``: extract, init, update, compile, with Babel's APIs."""

from __future__ import annotations

import ast
import datetime as dt
import io
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract
from babel.messages.mofile import write_mo
from babel.messages.pofile import PoFileError, read_po, write_po
from jinja2 import Environment, TemplateSyntaxError

from gateway.core.errors import ConfigError
from gateway.core.model import Site
from gateway.core.settings import Settings
from gateway.sites import tcf_texts
from gateway.sites import texts as builtin_texts
from gateway.sites.catalog import DEFAULT_TEMPLATES, PACKAGE_DIR
from gateway.sites.gvl_store import gvl_path, load_gvl
from gateway.sites.sitefile import read_site
from gateway.sites.translations import po_path, read_catalog

COMMANDS = ("extract", "init", "update", "compile")
# Comments a template author writes as `{# Translators: … #}` reach the .pot as `#.` lines.
COMMENT_TAGS = ("Translators:",)
_CREATION_DATE = re.compile(rb'^"POT-Creation-Date: .*\\n"\n', re.MULTILINE)

Location = tuple[str, int]


def pot_path(locales_dir: Path, site_id: str) -> Path:
    return locales_dir / f"{site_id}.pot"


def _relative(path: Path, root: Path) -> str:
    """A location for `#:` lines: built-ins as gateway/…, site files relative to the project."""
    resolved = path.resolve()
    for base in (root.resolve(), PACKAGE_DIR.parent):
        if resolved.is_relative_to(base):
            return resolved.relative_to(base).as_posix()
    return path.as_posix()


def _builtin_locations(root: Path) -> dict[str, Location]:
    """Line numbers of the built-in msgids in gateway/sites/texts.py, read from its syntax tree."""
    source_path = Path(builtin_texts.__file__)
    tree = ast.parse(source_path.read_text(encoding="utf-8"))
    where = _relative(source_path, root)
    found: dict[str, Location] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.setdefault(node.value, (where, node.lineno))
    return found


def _toml_line(lines: list[str], needle: str) -> int:
    """The first line of site.toml holding ``key = "needle"`` (TOML escapes are rare in copy)."""
    quoted = f'"{needle}"'
    for number, line in enumerate(lines, start=1):
        if quoted in line:
            return number
    return 1


def builtin_msgids(site: Site) -> dict[str, str]:
    """Built-in msgid → text key, without the ones the site overrides in [texts]."""
    out = {msgid: key for key, msgid in builtin_texts.BASE_TEXTS.items() if key not in site.texts}
    if "description" not in site.texts:
        out.update(
            {
                msgid: f"description ({model} banners)"
                for model, msgid in builtin_texts.DESCRIPTIONS.items()
            }
        )
    out.update({msgid: key for key, msgid in builtin_texts.EMAIL_TEXTS.items()})
    return out


def site_messages(site: Site, site_toml: Path, root: Path) -> Iterator[tuple[str, Location, str]]:
    """(msgid, location, translator comment) of the copy in site.toml: purposes, the
    preference model (channels, frequencies, topics, product lines) and [texts]."""
    lines = site_toml.read_text(encoding="utf-8").splitlines()
    where = _relative(site_toml, root)
    for purpose in site.purposes:
        yield purpose.name, (where, _toml_line(lines, purpose.name)), f"purpose {purpose.id}: name"
        yield (
            purpose.description,
            (where, _toml_line(lines, purpose.description)),
            f"purpose {purpose.id}: description",
        )
    for msgid, comment in site.preferences.messages():
        yield msgid, (where, _toml_line(lines, msgid)), comment
    for key, msgid in site.texts.items():
        yield msgid, (where, _toml_line(lines, msgid)), f"text key: {key}"


def template_files(site_dir: Path) -> list[Path]:
    """The site's own templates, then the built-in defaults they extend."""
    own = sorted(p for p in site_dir.rglob("*.html") if p.is_file())
    return own + sorted(DEFAULT_TEMPLATES.glob("*.html"))


def template_messages(
    path: Path, root: Path
) -> Iterator[tuple[str | tuple[str, ...], Location, list[str], str | None]]:
    """`_()`, `gettext`, `ngettext` and `{% trans %}` messages of one Jinja2 template."""
    where = _relative(path, root)
    source = path.read_text(encoding="utf-8")
    try:  # jinja2's extractor silently skips a broken template; translators would lose strings
        Environment(autoescape=True, extensions=["jinja2.ext.i18n"]).parse(source)
    except TemplateSyntaxError as exc:
        raise ConfigError(
            f"template syntax: {exc.message}",
            where=f"{path}:{exc.lineno}",
            hint="fix the template (`consent-gateway check` shows it too)",
        ) from exc
    with path.open("rb") as fp:
        for lineno, message, comments, context in extract(
            "jinja2.ext:babel_extract",
            fp,
            keywords=DEFAULT_KEYWORDS,
            comment_tags=COMMENT_TAGS,
            options={"extensions": "jinja2.ext.i18n"},
            strip_comment_tags=True,
        ):
            yield message, (where, lineno), list(comments), context


def build_template(site: Site, site_dir: Path, root: Path) -> Catalog:
    """The site's .pot: built-in texts, site.toml copy and template strings, with locations."""
    catalog = Catalog(
        domain=site.id,
        project=site.name,
        version=None,
        copyright_holder=site.controller or None,
        msgid_bugs_address=site.contact or None,
        charset="utf-8",
        fuzzy=False,
        header_comment=f"# Banner texts of the site {site.id!r}.\n"
        "# Template made by `consent-gateway i18n extract`.\n#",
    )
    builtin = _builtin_locations(root)
    for msgid, key in builtin_msgids(site).items():
        catalog.add(
            msgid,
            locations=[builtin.get(msgid, ("gateway/sites/texts.py", 1))],
            auto_comments=[f"text key: {key}"],
        )
    for msgid, location, comment in site_messages(site, site_dir / "site.toml", root):
        _add(catalog, msgid, location, [comment], None)
    for path in template_files(site_dir):
        for message, location, comments, context in template_messages(path, root):
            _add(catalog, message, location, comments, context)
    return catalog


def _add(
    catalog: Catalog,
    message: str | tuple[str, ...],
    location: Location,
    comments: list[str],
    context: str | None,
) -> None:
    key = message[0] if isinstance(message, tuple) else message
    existing = catalog.get(key, context)
    if existing is not None:
        existing.locations.append(location)
        existing.auto_comments.extend(c for c in comments if c not in existing.auto_comments)
        return
    catalog.add(message, locations=[location], auto_comments=comments, context=context)


def _po_bytes(catalog: Catalog, **options: bool) -> bytes:
    buf = io.BytesIO()
    write_po(buf, catalog, width=76, include_lineno=True, **options)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    """Translators' editors may be watching: never leave a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _same_but_date(old: bytes, new: bytes) -> bool:
    return _CREATION_DATE.sub(b"", old) == _CREATION_DATE.sub(b"", new)


def _sites(settings: Settings, site_id: str | None) -> list[tuple[Site, Path]]:
    if site_id is not None:
        site_dir = settings.banners_dir / site_id
        return [(read_site(site_dir), site_dir)]
    if not settings.banners_dir.is_dir():
        raise ConfigError(
            "banners folder not found",
            where=str(settings.banners_dir),
            hint="set GATEWAY_BANNERS_DIR",
        )
    dirs = sorted(
        p
        for p in settings.banners_dir.iterdir()
        if p.is_dir() and not p.name.startswith((".", "_"))
    )
    return [(read_site(d), d) for d in dirs]


def _root(settings: Settings) -> Path:
    # Locations in .pot files are relative to the project folder that holds banners/.
    return settings.banners_dir.resolve().parent


def extract_site(settings: Settings, site: Site, site_dir: Path) -> list[str]:
    root = _root(settings)
    template = build_template(site, site_dir, root)
    gvl = load_gvl(settings.banners_dir) if site.tcf is not None else None
    if site.tcf is not None and gvl is not None:  # the texts TCF requires on the first layer
        where = (_relative(gvl_path(settings.banners_dir), root), 1)
        for msgid, comment in tcf_texts.messages(site.tcf, gvl):
            _add(template, msgid, where, [comment], None)
    path = pot_path(settings.locales_dir, site.id)
    data = _po_bytes(template)
    if path.exists() and _same_but_date(path.read_bytes(), data):
        return [f"{_relative(path, root)}: unchanged ({len(template)} messages)"]
    _write_atomic(path, data)
    return [f"{_relative(path, root)}: wrote {len(template)} messages"]


def read_template(settings: Settings, site: Site) -> Catalog:
    path = pot_path(settings.locales_dir, site.id)
    if not path.exists():
        raise ConfigError(
            "no template",
            where=str(path),
            hint=f"run `consent-gateway i18n extract --site {site.id}` first",
        )
    try:
        with path.open("rb") as fp:
            template: Catalog = read_po(fp, abort_invalid=True)
    except (PoFileError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"invalid template: {exc}",
            where=str(path),
            hint=f"run `consent-gateway i18n extract --site {site.id}` again",
        ) from exc
    return template


def _locale(locale: str) -> Locale:
    try:
        return Locale.parse(locale)
    except (UnknownLocaleError, ValueError) as exc:
        raise ConfigError(
            f"unknown locale {locale!r}",
            where="--locale",
            hint="use Babel identifiers such as de, pt_BR, zh_Hans",
        ) from exc


def init_site(settings: Settings, site: Site, locale: str) -> list[str]:
    root = _root(settings)
    parsed = _locale(locale)
    template = read_template(settings, site)
    path = po_path(settings.locales_dir, locale, site.id)
    if path.exists():
        return [
            f"{_relative(path, root)}: exists, not overwritten (use `consent-gateway i18n update`)"
        ]
    template.locale = parsed
    template.revision_date = dt.datetime.now(dt.UTC)
    template.fuzzy = False
    _write_atomic(path, _po_bytes(template))
    lines = [f"{_relative(path, root)}: created with {len(template)} messages to translate"]
    if locale not in site.locales:
        site_toml = _relative(settings.banners_dir / site.id / "site.toml", root)
        lines.append(f"note: add {locale!r} to `locales` in {site_toml} to offer it")
    return lines


def catalogs_of(settings: Settings, site_id: str) -> list[tuple[str, Path]]:
    """(locale, .po path) of every catalog of the site's domain under locales/."""
    found = []
    if settings.locales_dir.is_dir():
        for locale_dir in sorted(settings.locales_dir.iterdir()):
            path = po_path(settings.locales_dir, locale_dir.name, site_id)
            if path.is_file():
                found.append((locale_dir.name, path))
    return found


def update_site(settings: Settings, site: Site) -> list[str]:
    root = _root(settings)
    template = read_template(settings, site)
    lines = []
    for locale, path in catalogs_of(settings, site.id):
        catalog = read_catalog(path, locale)
        before = {m.id for m in catalog if m.id}
        catalog.update(template, no_fuzzy_matching=False)
        added = [m for m in catalog if m.id and m.id not in before]
        fuzzy = [m for m in catalog if m.id and m.fuzzy]
        # `#| msgid` lines show translators what the fuzzy entry used to say.
        _write_atomic(path, _po_bytes(catalog, include_previous=True))
        lines.append(
            f"{_relative(path, root)}: {len(catalog)} messages, {len(added)} new, "
            f"{len(fuzzy)} fuzzy, {len(catalog.obsolete)} obsolete"
        )
    if not lines:
        lines.append(
            f"{site.id}: no catalogs yet (run `consent-gateway i18n init "
            f"--site {site.id} --locale <locale>`)"
        )
    return lines


def _short(message_id: object) -> str:
    text = message_id[0] if isinstance(message_id, tuple) else str(message_id)
    return repr(text if len(text) <= 50 else text[:47] + "...")


def compile_site(settings: Settings, site: Site) -> list[str]:
    root = _root(settings)
    lines = []
    for locale, path in catalogs_of(settings, site.id):
        catalog = read_catalog(path, locale)
        messages = [m for m in catalog if m.id]
        fuzzy = [m for m in messages if m.fuzzy]
        done = [
            m
            for m in messages
            if m.string and not m.fuzzy and (all(m.string) if isinstance(m.string, tuple) else True)
        ]
        buf = io.BytesIO()
        write_mo(buf, catalog, use_fuzzy=False)
        _write_atomic(path.with_suffix(".mo"), buf.getvalue())
        lines.append(
            f"{_relative(path.with_suffix('.mo'), root)}: {len(done)} of "
            f"{len(messages)} translated, {len(fuzzy)} fuzzy skipped"
        )
        lines += [
            f"  skipped fuzzy {_short(m.id)} (review it, then remove the fuzzy flag)" for m in fuzzy
        ]
        for message, errors in catalog.check():
            lines += [f"  error in {_short(message.id)}: {e}" for e in errors]
    if not lines:
        lines.append(f"{site.id}: no catalogs to compile")
    return lines


def run(settings: Settings, command: str, site: str | None, locale: str | None) -> list[str]:
    """Run one workflow command over one site (or all) and return what it did, line by line."""
    if command not in COMMANDS:
        raise ConfigError(f"unknown i18n command {command!r}", hint=", ".join(COMMANDS))
    if command == "init" and not locale:
        raise ConfigError("init needs a locale", hint="--locale de")
    lines: list[str] = []
    for site_obj, site_dir in _sites(settings, site):
        if command == "extract":
            lines += extract_site(settings, site_obj, site_dir)
        elif command == "init":
            lines += init_site(settings, site_obj, locale or "")
        elif command == "update":
            lines += update_site(settings, site_obj)
        else:
            lines += compile_site(settings, site_obj)
    return lines


def used_msgids(site: Site, site_dir: Path) -> list[str]:
    """Every msgid the site can show: what `check` measures coverage against."""
    ids: list[str] = list(builtin_msgids(site))
    ids += [m for p in site.purposes for m in (p.name, p.description)]
    ids += [msgid for msgid, _ in site.preferences.messages()]
    ids += list(site.texts.values())
    for path in template_files(site_dir):
        ids += [m[0] if isinstance(m, tuple) else m for m, _, _, _ in _safe_template_messages(path)]
    return list(dict.fromkeys(ids))


def _safe_template_messages(
    path: Path,
) -> Iterable[tuple[str | tuple[str, ...], Location, list[str], str | None]]:
    try:
        return list(template_messages(path, path.parent))
    except ConfigError:  # a broken template is reported by the template check, not here
        return []
