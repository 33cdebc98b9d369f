"""Template injection: a site template (edited by marketers) reaches no secret and runs no code.

The review's payloads read GATEWAY_ADMIN_TOKEN, the store password and receipt.key and ran
shell commands from a banner override; a hot reload executed a refused edit 82 times and
`consent-gateway check` executed it too. Each payload below must fail with a clear message,
before anything runs where a static check can see it, and at render time where it cannot.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from jinja2 import TemplateError

from gateway.cli import checks
from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.serving import render, sandbox, validation
from gateway.sites.catalog import LiveCatalog, load_site
from tests.helpers import editable_settings, shipped_rules

ADMIN_TOKEN = "adm-SECRET-ssti-123-abcdefghijkl"
STORE_PASSWORD = "pgpassw0rd-SECRET"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # The secrets a template once read from the process environment.
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("GATEWAY_STORE_URL", f"postgresql://u:{STORE_PASSWORD}@127.0.0.1/x")
    return editable_settings(tmp_path, admin_token=ADMIN_TOKEN)


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the templates the sandbox renders from now on."""
    names: list[str] = []
    real = sandbox.render

    def counting(template: Any, context: Any) -> str:
        names.append(template.name)
        return real(template, context)

    monkeypatch.setattr(sandbox, "render", counting)
    return names


def _demo(settings: Settings) -> Any:
    return load_site(settings.banners_dir / "demo", settings.locales_dir, shipped_rules())


def _override(settings: Settings, body: str, name: str = "banner.html") -> Path:
    path = settings.banners_dir / "demo" / name
    base = name if name != "include.html" else "banner.html"
    path.write_text(
        f'{{% extends "default:{base}" %}}{{% block footer %}}{body}{{% endblock %}}',
        encoding="utf-8",
    )
    return path


# (id, template code) from the review and the usual Jinja escapes.
ESCAPES = [
    ("cycler globals", '{{ cycler.__init__.__globals__.os.environ.get("GATEWAY_ADMIN_TOKEN") }}'),
    ("lipsum builtins", '{{ lipsum.__globals__.__builtins__.open("/etc/hostname").read() }}'),
    ("lipsum os popen", '{{ lipsum.__globals__.os.popen("id").read() }}'),
    ("template reference context", "{{ self._TemplateReference__context }}"),
    ("mro subclasses", "{{ texts.__class__.__mro__[1].__subclasses__() }}"),
    ("item dunder", '{{ texts["__class__"] }}'),
    ("attr filter dunder", '{{ texts|attr("__class__") }}'),
    ("map attribute dunder", '{{ purposes|map(attribute="__class__")|list }}'),
    ("namespace global", "{% set ns = namespace(a=1) %}{{ ns }}"),
    ("joiner global", "{{ joiner.__init__ }}"),
    ("settings variable", "{{ settings.admin_token }}"),
    ("request variable", "{{ request.app.state.settings.admin_token }}"),
    ("config variable", "{{ config }}"),
    ("os variable", "{{ os.environ }}"),
    ("pprint filter", "{{ texts|pprint }}"),
    ("format filter bomb", '{{ "%999999999s"|format(1) }}'),
    ("str format bomb", '{{ "{:999999999}".format(1) }}'),
    ("ljust bomb", '{{ "a".ljust(999999999) }}'),
    ("recursive loop", "{% for p in purposes recursive %}{{ loop(p) }}{% endfor %}"),
]


@pytest.mark.parametrize("code", [c for _, c in ESCAPES], ids=[i for i, _ in ESCAPES])
def test_template_injection_is_refused_before_it_runs(
    settings: Settings, code: str, renders: list[str]
) -> None:
    _override(settings, code)
    bundle = _demo(settings)
    with pytest.raises(ConfigError) as info:
        validation.validate_bundle(bundle)
    assert "refused by the template sandbox" in info.value.message
    assert "banner.html" in info.value.where
    assert renders == []  # refused statically: not one render of the hostile file


@pytest.mark.parametrize("code", [c for _, c in ESCAPES], ids=[i for i, _ in ESCAPES])
def test_template_injection_fails_at_render_time_too(settings: Settings, code: str) -> None:
    """Defence in depth: were the static check bypassed, the sandbox still refuses."""
    bundle = _demo(settings)
    env = render.make_environment(bundle.directory, bundle.translations.get("en"))
    context = {"texts": {"title": "t"}, "purposes": [{"id": "a"}], "site": {}}
    try:
        text = sandbox.render(env.from_string(code), context)
    except TemplateError as exc:
        text = str(exc)
    else:
        # map(attribute=…) yields Undefined for an unsafe attribute rather than failing.
        assert "dict" not in text and "type" not in text, text
    assert ADMIN_TOKEN not in text and STORE_PASSWORD not in text


# Payloads the static check lets through (they look like ordinary code) but the sandbox
# stops while rendering, each in bounded time and with a message that names the cause.
BOMBS = [
    ("range bomb", "{% for i in range(10**6) %}x{% endfor %}", "range() of more than"),
    (
        "nested loops",
        "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}"
        "{% endfor %}{% endfor %}{% endfor %}",
        "s of CPU to render",
    ),
    ("repetition bomb", '{{ "x" * 1000000000 }}', "repetition longer than"),
    ("power bomb", "{{ 2 ** 100000000 }}", "exponent too large"),
    ("percent bomb", '{{ "%999999999s" % 1 }}', "string formatting with %"),
    ("concatenation bomb", '{{ ("x" * 100000) + ("x" * 100000) }}', "concatenation longer"),
    (
        "concatenation doubling",
        '{% set a = "x" * 100000 %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c|length }}',
        "concatenation longer",
    ),
    ("join bomb", '{% set a = "x" * 100000 %}{{ ([a] * 1000)|join|length }}', "join longer"),
    ("mutate shared texts", '{{ texts.update({"title": "pwned"}) }}', "unsafe"),
    ("mutate shared purposes", "{{ purposes.append(1) }}", "unsafe"),
    (
        "recursive macro",
        "{% macro m() %}{% for i in range(1000) %}{{ m() }}{% endfor %}{% endmacro %}{{ m() }}",
        "recursed too deeply",
    ),
    ("output bomb", '{% for i in range(1000) %}{{ "x" * 100000 }}{% endfor %}', "wrote more"),
]


@pytest.mark.parametrize(("code", "message"), [b[1:] for b in BOMBS], ids=[b[0] for b in BOMBS])
def test_template_resource_bombs_fail_cleanly_and_quickly(
    settings: Settings, code: str, message: str, renders: list[str]
) -> None:
    _override(settings, code)
    bundle = _demo(settings)
    assert validation.sandbox_findings(bundle) == []
    start = time.thread_time()
    with pytest.raises(ConfigError) as info:
        validation.validate_bundle(bundle)
    assert time.thread_time() - start < sandbox.MAX_SECONDS + 3  # the bound, plus the checks
    assert message in info.value.message
    # A reload refuses on the first failure: banner.html ran once, not once per locale and rule.
    assert renders.count("banner.html") == 1


def test_hot_reload_refuses_a_hostile_edit_without_running_it(
    settings: Settings, renders: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    catalog = LiveCatalog(
        settings.banners_dir,
        settings.locales_dir,
        shipped_rules(),
        validate=validation.validate_bundle,
    )
    catalog.load()
    good = catalog.get("demo")
    renders.clear()  # count from the hostile edit on
    _override(settings, '{{ lipsum.__globals__.os.system("touch /tmp/pwned-by-reload") }}')
    assert catalog.reload() is False
    assert catalog.get("demo") is good  # the last good version keeps serving
    assert "refused by the template sandbox" in (catalog.last_error or "")
    assert renders == []


def test_check_command_reports_a_hostile_template_without_running_it(
    settings: Settings, renders: list[str]
) -> None:
    _override(settings, '{{ cycler.__init__.__globals__.os.environ["GATEWAY_ADMIN_TOKEN"] }}')
    report = checks.run_checks(settings)
    errors = [e.message for e in report.errors]
    assert any("attribute '__globals__' is not available" in e for e in errors), errors
    assert "banner.html" not in renders
    assert ADMIN_TOKEN not in "\n".join(report.lines())


def test_privacy_center_override_is_sandboxed_too(settings: Settings) -> None:
    _override(settings, "{{ page_config.__class__ }}", name="privacy_center.html")
    bundle = _demo(settings)
    with pytest.raises(ConfigError) as info:
        validation.validate_bundle(bundle)
    assert "privacy_center.html" in info.value.where


def test_template_symlink_out_of_the_site_folder_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    """A symlink committed into banners/ would otherwise include /proc/self/environ."""
    secret = tmp_path / "outside.html"
    secret.write_text(ADMIN_TOKEN, encoding="utf-8")
    os.symlink(secret, settings.banners_dir / "demo" / "leak.html")
    _override(settings, '{% include "leak.html" %}')
    bundle = _demo(settings)
    with pytest.raises(ConfigError) as info:
        validation.validate_bundle(bundle)
    assert "resolves outside its folder" in info.value.message
    assert ADMIN_TOKEN not in str(info.value)


def test_documented_template_features_still_work(settings: Settings) -> None:
    code = (
        '{{ super() }}<p id="x">{{ _("Sold by %(name)s", name=site.name) }} · '
        "{{ purposes|map(attribute='id')|join(', ')|upper }} · {{ texts.title|length }}"
        "{% for p in purposes %}{{ loop.index }}{% endfor %} · {{ self.title() }}"
        "{% set n = range(3)|list %}{{ n|sum }} · {{ theme|dictsort|length }}</p>"
    )
    _override(settings, code)
    bundle = _demo(settings)
    validation.validate_bundle(bundle)
    resolved = render.Renderer().resolve(bundle, _any_rule(), "en", False)
    html = resolved.html
    assert "NECESSARY, ANALYTICS" in html and "1234 · " in html and "</h2>3 · " in html


def _any_rule() -> Any:
    return shipped_rules().rules["gdpr"]
