"""Will every visitor of a site get a banner? Template syntax, sandbox and render checks.

The catalog runs ``validate_bundle`` before it serves a new version (a reload), and
``consent-gateway check`` reports the same findings in full. Syntax and the sandbox's static
rules are checked first, without running anything: a template they refuse is never rendered.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import TemplateSyntaxError

from gateway.core.errors import ConfigError
from gateway.core.model import Region, Rule
from gateway.serving import render, sandbox
from gateway.sites.catalog import SiteBundle


@dataclass(frozen=True)
class Finding:
    """One problem: where it is (file, key), what is wrong, how to fix it."""

    where: str
    message: str
    hint: str = ""

    def line(self, level: str) -> str:
        place = f"{self.where}: " if self.where else ""
        text = f"{level}: {place}{self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


def rules_of(bundle: SiteBundle) -> list[Rule]:
    """Every rule a visitor of this site can get: the templates and the site's own overrides."""
    site_rules = bundle.rules
    overrides = site_rules.overrides
    found = {id(r): r for r in site_rules.table.rules.values()}
    for code in [*overrides, None]:
        if code == "*" or code is None:
            region = Region()
        else:
            country, _, sub = str(code).partition("-")
            region = Region(country=country, subdivision=sub or None, source="query")
        rule = site_rules.rule(region)
        found.setdefault(id(rule), rule)
    return list(found.values())


def syntax_errors(bundle: SiteBundle) -> list[Finding]:
    """Jinja2 syntax errors of the site's own templates, with file and line."""
    site_dir = bundle.directory
    env = render.make_environment(site_dir, bundle.translations.get(bundle.site.default_locale))
    found = []
    for path in sorted(site_dir.rglob("*.html")):
        name = path.relative_to(site_dir).as_posix()
        try:
            env.parse(path.read_text(encoding="utf-8"), name, str(path))
        except TemplateSyntaxError as exc:
            found.append(
                Finding(
                    f"{path}:{exc.lineno}",
                    f"template syntax: {exc.message}",
                    'a site template starts with {% extends "default:banner.html" '
                    "%} and overrides blocks",
                )
            )
    return found


def sandbox_findings(bundle: SiteBundle) -> list[Finding]:
    """What the sandbox would refuse in the site's templates, found without running them."""
    site_dir = bundle.directory
    env = render.make_environment(site_dir, bundle.translations.get(bundle.site.default_locale))
    sources = []
    for path in sorted(site_dir.rglob("*.html")):
        name = path.relative_to(site_dir).as_posix()
        sources.append((name, path.read_text(encoding="utf-8"), render.variables_of(name)))
    return [
        Finding(
            str(site_dir / name),
            f"refused by the template sandbox: {problem}",
            "templates see only the variables and filters in docs/templates.md",
        )
        for name, problem in sandbox.iter_problems(env, sources)
    ]


def _coverage(rule: Rule) -> int:
    """How many optional parts of a banner the rule switches on (links, notes, separate asks)."""
    flags = (rule.gpc, rule.reject_on_first_layer, rule.do_not_sell_link, rule.limit_sensitive_link)
    return sum(flags) + len(rule.separate_consent)


def cases(bundle: SiteBundle, every_rule: bool) -> list[tuple[str, Rule]]:
    """(locale, rule) pairs to render: all of them, or (what a reload can afford) every rule in
    the default language plus, in every other language, the rule of each consent model that
    shows the most optional parts, so that each translated text is rendered at least once."""
    rules = rules_of(bundle)
    site = bundle.site
    if every_rule:
        return [(locale, rule) for locale in site.locales for rule in rules]
    widest: dict[str, Rule] = {}
    for rule in rules:
        if rule.model not in widest or _coverage(rule) > _coverage(widest[rule.model]):
            widest[rule.model] = rule
    pairs = [(site.default_locale, rule) for rule in rules]
    pairs += [
        (locale, rule)
        for locale in site.locales
        if locale != site.default_locale
        for rule in widest.values()
    ]
    return pairs


def render_failures(
    bundle: SiteBundle, every_rule: bool = True, first_only: bool = False
) -> dict[str, list[str]]:
    """Render (locale, rule, GPC) combinations; failure message → `locale/rule` cases.

    ``first_only``: stop at the first failure (a reload refuses on one, so it renders no more
    of a template than it must).
    """
    renderer = render.Renderer()  # shares compiled templates across its locales
    failures: dict[str, list[str]] = {}
    for locale, rule in cases(bundle, every_rule):
        for gpc in (False, True) if rule.gpc else (False,):
            try:
                renderer.resolve(bundle, rule, locale, gpc)
            except ConfigError as exc:
                failures.setdefault(exc.message, []).append(f"{locale}/{rule.id}")
            except Exception as exc:  # e.g. a translation whose placeholder is unknown
                message = f"render error: {type(exc).__name__}: {exc}"
                failures.setdefault(message, []).append(f"{locale}/{rule.id}")
            if failures and first_only:
                return failures
    return failures


def template_findings(
    bundle: SiteBundle, every_rule: bool = True, first_only: bool = False
) -> list[Finding]:
    """Syntax errors, else what the sandbox refuses, else every distinct render failure with
    the cases it hits. Only the last step runs template code."""
    static = syntax_errors(bundle) or sandbox_findings(bundle)
    if static:
        return static
    return [
        Finding(
            str(bundle.directory),
            f"{message} (fails for {len(hit)} locale/rule "
            f"combination(s), e.g. {', '.join(hit[:3])})",
            "templates see only the variables in docs/templates.md; translations keep "
            "the msgid's placeholders",
        )
        for message, hit in render_failures(bundle, every_rule, first_only).items()
    ]


def validate_bundle(bundle: SiteBundle) -> None:
    """Raise ConfigError if a visitor of this site would get no banner; cheap enough for reload."""
    for finding in template_findings(bundle, every_rule=False, first_only=True):
        raise ConfigError(finding.message, where=finding.where, hint=finding.hint)
