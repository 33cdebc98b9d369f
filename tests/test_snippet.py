"""The snippet as served: size budget, script-safe config, start-up errors, default templates."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from jinja2 import ChoiceLoader, DictLoader, Environment, FileSystemLoader, PrefixLoader
from starlette.testclient import TestClient

from gateway.core.errors import ConfigError
from gateway.serving.snippet import (
    PLACEHOLDER,
    Snippet,
    script_json,
    source_hash,
    unquote_attributes,
)
from tests.browser.democonfig import ROOT, RULE_IDS, TEMPLATES, demo_config, demo_layers
from tests.helpers import shipped_rules

STATIC = ROOT / "static"
# First visit, gzipped as the gateway sends it: JS + CSS + one locale's strings and the first
# layer; the preferences panel is a part loaded when opened (gateway/serving/parts.py).
# Issue 15's "5.5 KB", read as browsers' developer tools count it: 5,500 bytes (not 5.5 KiB).
BUDGET = 5500


@pytest.fixture(scope="module")
def snippet() -> Snippet:
    return Snippet.load(STATIC)


DEMO_LOCALES = ["en", "de", "fr", "es", "it", "nl", "pt_BR", "zh_Hans", "zh_Hant", "ja", "ko", "ar"]
# What the snippet may not lose when it moves code or copy out of the first visit.
FIRST_VISIT = ("cg-banner", ":host", "data-cg-action", "state_check", "part")


@pytest.mark.parametrize("rule", ["gdpr", "ccpa", "notice", "pipl"])
def test_first_visit_holds_the_first_layer_and_not_the_panel(snippet: Snippet, rule: str) -> None:
    text = snippet.assemble(demo_config(rule)).decode()
    for needed in FIRST_VISIT:
        assert needed in text
    assert "cg-prefs" not in text  # the panel is a part
    assert "role=switch" not in text


LOCALES = ["en", "de", "fr", "es", "it", "nl", "pt-BR", "zh-Hans", "zh-Hant", "ja", "ko", "ar"]
# One region per rule model of the demo site: opt-in, opt-out (CCPA), separate consent (PIPL),
# notice, LGPD.
REGIONS = ["DE", "US-CA", "CN", "JP", "BR"]


def served_sizes(client: TestClient, coding: str) -> dict[tuple[str, str], int]:
    """Bytes of consent.js as sent with ``Content-Encoding: coding``, per locale and region."""
    sizes = {}
    for lang, region in itertools.product(LOCALES, REGIONS):
        response = client.get(
            "/v1/sites/demo/consent.js",
            params={"lang": lang, "region": region},
            headers={"Accept-Encoding": coding},
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/javascript")
        assert response.headers["content-encoding"] == coding
        sizes[lang, region] = int(response.headers["content-length"])
    return sizes


def test_served_consent_js_fits_the_budget_in_every_demo_locale_and_rule(
    client: TestClient,
) -> None:
    sizes = served_sizes(client, "gzip")
    largest = max(sizes, key=lambda k: sizes[k])
    assert sizes[largest] <= BUDGET, f"{largest}: {sizes[largest]} bytes gzipped"


def test_served_consent_js_is_measured_whole_and_shrinks_with_brotli(client: TestClient) -> None:
    gz, br = served_sizes(client, "gzip"), served_sizes(client, "br")
    assert min(gz.values()) > 4000  # the measurement covers the whole snippet
    assert all(br[k] < gz[k] for k in gz)
    assert max(gz.values()) <= 7 * 1024  # never above the budget before the panel moved out


def test_minification_shrinks_the_source_and_removes_the_placeholder(snippet: Snippet) -> None:
    source = (STATIC / "consent.js").read_bytes()
    assert len(snippet.head) + len(snippet.tail) < 0.75 * len(source)
    assert PLACEHOLDER.encode() not in snippet.head + snippet.tail
    assert "/*" not in snippet.css
    assert len(snippet.css) < len((STATIC / "consent.css").read_text())
    assert re.fullmatch(r"[0-9a-f]{16}", snippet.digest)


HOSTILE = [
    "</script><script>alert(1)</script>",
    "<!-- <script>",
    "a\u2028b\u2029c",
    "Tom & Jerry > Itchy",
    "quote \" backslash \\ and ' single",
    "emoji 🍪 and 中文 and العربية",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_script_json_is_inert_in_a_script_and_round_trips(value: str) -> None:
    data = script_json({"title": value, "list": [value]})
    for raw in (b"<", b">", b"&", "\u2028".encode(), "\u2029".encode()):
        assert raw not in data
    assert json.loads(data) == {"title": value, "list": [value]}


def test_assembled_snippet_is_valid_javascript_with_hostile_config(
    snippet: Snippet, tmp_path: Path
) -> None:
    config = demo_config(text_overrides={"title": HOSTILE[0], "description": HOSTILE[2]})
    config["site"] = HOSTILE[1]
    served = snippet.assemble(config)
    assert b"</script" not in served.lower()
    node = shutil.which("node")
    assert node, "node is installed by scripts/bootstrap.sh test"
    path = tmp_path / "consent.js"
    path.write_bytes(served)
    # Parse only (the snippet needs a DOM to run; the browser tests run it).
    result = subprocess.run(
        [node, "--check", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


def test_css_is_added_unless_the_config_has_it(snippet: Snippet) -> None:
    without = snippet.assemble({"a": 1})
    assert script_json(snippet.css) in without
    given = snippet.assemble({"css": "x{}"})
    assert b'"css":"x{}"' in given
    assert script_json(snippet.css) not in given


def test_missing_placeholder_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "consent.js").write_text("(function(){var C = {};})();")
    (tmp_path / "consent.css").write_text("p{}")
    (tmp_path / "panel.css").write_text("p{}")
    (tmp_path / "consent-more.js").write_text("")
    with pytest.raises(ConfigError, match="exactly once") as info:
        Snippet.load(tmp_path)
    assert info.value.where.endswith("consent.js")


def test_missing_sources_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as info:
        Snippet.load(tmp_path)
    assert "consent.js" in info.value.hint


FIRST_LAYER = [
    ("gdpr", ["accept_all", "reject_all", "settings"], 'role="dialog" aria-modal="true"'),
    ("pipl", ["accept_all", "reject_all", "settings"], 'role="dialog" aria-modal="true"'),
    ("ccpa", ["do_not_sell", "limit_sensitive", "ok", "settings"], 'role="region"'),
    ("notice", ["ok", "settings"], 'role="region"'),
]


@pytest.mark.parametrize(("rule", "actions", "role"), FIRST_LAYER)
def test_banner_template_per_rule_model(rule: str, actions: list[str], role: str) -> None:
    html = demo_config(rule)["html"]["banner"]
    assert re.findall(r'data-cg-action="(\w+)"', html) == actions
    assert role in html
    assert 'aria-labelledby="cg-title"' in html
    # The "GPC honoured" note exists wherever the rule honours GPC.
    assert ("data-cg-gpc" in html) == shipped_rules().rules[RULE_IDS[rule]].gpc


def test_opt_in_buttons_have_equal_prominence() -> None:
    html = demo_config("gdpr")["html"]["banner"]
    buttons = re.findall(r"<button([^>]*)>", html)
    assert len(buttons) == 3
    # Same element, same (absent) class: the stylesheet cannot favour Accept over Reject.
    assert {re.sub(r'data-cg-action="\w+"', "", b) for b in buttons} == {' type="button" '}


def test_preferences_has_one_switch_per_optional_purpose() -> None:
    html = demo_layers("pipl")["preferences"]
    assert re.findall(r'data-cg-purpose="(\w+)"', html) == [
        "analytics",
        "marketing",
        "personalization",
    ]
    assert html.count('role="switch"') == 3
    assert "Always on" in html
    # PIPL asks third-party sharing separately; the template says so next to that purpose.
    assert html.count("needs your separate consent") == 1


def test_templates_escape_site_copy() -> None:
    html = demo_config(text_overrides={"title": '<img src=x onerror="alert(1)">'})["html"]
    assert "<img" not in html["banner"]
    assert "&lt;img src=x" in html["banner"]


def test_a_site_overrides_one_block() -> None:
    env = Environment(
        loader=ChoiceLoader(
            [
                PrefixLoader({"default": FileSystemLoader(str(TEMPLATES))}, delimiter=":"),
                DictLoader(
                    {
                        "site/banner.html": (
                            '{% extends "default:banner.html" %}'
                            '{% block title %}<h2 id="cg-title">Cookies, {{ site.name }}</h2>'
                            "{% endblock %}"
                        )
                    }
                ),
            ]
        ),
        autoescape=True,
    )
    html = env.get_template("site/banner.html").render(
        site={"name": "Shop", "privacy_policy_url": ""},
        rule={
            "model": "opt-in",
            "gpc": False,
            "do_not_sell_link": False,
            "limit_sensitive_link": False,
            "reject_on_first_layer": True,
        },
        texts={k: k for k in ("title", "description", "accept_all", "reject_all", "settings")},
        language="en",
        dir="ltr",
    )
    assert '<h2 id="cg-title">Cookies, Shop</h2>' in html
    assert 'data-cg-action="reject_all"' in html
    assert ">title<" not in html


def test_inline_config_drops_only_what_the_html_already_carries(snippet: Snippet) -> None:
    config = demo_config("ccpa")
    slim = snippet.inline_config(config)
    # The GPC status is shown by the script (CCPA regs 7025(c)(6)) where the rule honours GPC.
    assert slim["texts"] == {k: config["texts"][k] for k in ("saved", "gpc_status")}
    assert "gpc_status" not in snippet.inline_config(demo_config("gdpr"))["texts"]
    assert [p["id"] for p in slim["purposes"]] == [p["id"] for p in config["purposes"]]
    # A false, null or empty flag is left out: the script reads a missing one as false.
    assert set(slim["purposes"][2]) == {"id", "default", "sale_or_share", "cookies", "consent_mode"}
    assert set(slim["purposes"][0]) == {"id", "essential", "default", "consent_mode"}
    # The layers lose only the quotes around plain attribute values, which HTML does not need.
    assert slim["html"] == {k: unquote_attributes(v) for k, v in config["html"].items()}
    assert 'data-cg-action="ok"' in config["html"]["banner"]
    assert "data-cg-action=ok" in slim["html"]["banner"]
    assert slim["css"] == snippet.css
    assert config["texts"]["title"]
    assert "css" not in config
    # The script passes the Consent Mode defaults to gtag as they are.
    assert slim["consent_mode"] == {
        "default": {**config["consent_mode"]["default"], "wait_for_update": 500}
    }


@pytest.mark.parametrize("html", ['<p title="a b">', '<p title="x&amp;y">', '<p title="">'])
def test_unquoting_keeps_values_that_need_quotes(html: str) -> None:
    assert unquote_attributes(html) == html


def test_the_committed_terser_build_is_fresh_and_used(snippet: Snippet) -> None:
    source = (STATIC / "consent.js").read_bytes()
    build = (STATIC / "consent.min.js").read_text().split("\n", 1)
    assert build[0] == f"/*! consent.js {source_hash(source)} */", "run `npm run build`"
    assert snippet.head + PLACEHOLDER.encode() + snippet.tail == build[1].strip().encode()
    more = (STATIC / "consent-more.js").read_bytes()
    more_build = (STATIC / "consent-more.min.js").read_text().split("\n", 1)
    assert more_build[0] == f"/*! consent-more.js {source_hash(more)} */", "run `npm run build`"
    assert snippet.more == more_build[1].strip().encode()


def test_the_code_acting_on_choices_is_a_script_part(client: TestClient, snippet: Snippet) -> None:
    """The second part of the snippet is served once for everyone, cacheable and compressed."""
    more = client.get("/v1/sites/demo/parts/more.js", headers={"Accept-Encoding": "br"})
    assert more.status_code == 200
    assert more.headers["content-type"] == "text/javascript; charset=utf-8"
    assert more.headers["content-encoding"] == "br"
    assert more.headers["cache-control"].startswith("public")
    assert more.content == snippet.more
    assert b"idempotency_key" in more.content  # records are made there
    assert b"idempotency_key" not in snippet.head + snippet.tail


def test_a_stale_build_falls_back_to_the_source(tmp_path: Path) -> None:
    for name in ("consent.js", "consent-more.js", "consent.css", "panel.css", "consent.min.js"):
        shutil.copy(STATIC / name, tmp_path / name)
    with (tmp_path / "consent.js").open("a") as f:
        f.write("\n// edited after the build\n")
    stale = Snippet.load(tmp_path)
    assert b"__CG_CONFIG__" not in stale.head
    # rjsmin keeps the source's identifiers; the terser build mangles them.
    assert b"readState" in stale.head + stale.tail
    assert b"readState" not in Snippet.load(STATIC).head + Snippet.load(STATIC).tail


@pytest.mark.parametrize("gpc", [False, True])
def test_gpc_note_is_rendered_visible_when_the_request_signalled_gpc(gpc: bool) -> None:
    html = demo_layers("ccpa", gpc=gpc)
    for layer in ("banner", "preferences"):
        note = re.search(r"<p [^>]*data-cg-gpc[^>]*>", html[layer])
        assert note is not None
        assert ("hidden" in note.group(0)) is not gpc
