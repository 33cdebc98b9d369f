"""The embeddable snippet: static/ minified once at start-up, config inlined per response."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import rcssmin  # type: ignore[import-untyped]
import rjsmin  # type: ignore[import-untyped]

from gateway.core.errors import ConfigError

# The identifier in static/consent.js that the visitor's config replaces. An identifier, not a
# comment, so that the minifier keeps it.
PLACEHOLDER = "__CG_CONFIG__"

# The banner's words reach the visitor through config["html"]; the script itself only needs
# these texts, and the purposes without their display copy. Dropping the duplicates keeps the
# first visit inside the 7 KB budget (the JSON /config endpoint still carries everything).
SCRIPT_TEXTS = frozenset({"saved", "gpc_status"})
HTML_ONLY_PURPOSE_FIELDS = frozenset(
    {"name", "description", "recipients", "retention", "wechat_apis"}
)
HTML_ONLY_KEYS = ("privacy_policy_url", "controller", "wechat")
# Config keys and purpose fields the script never reads (the JSON config keeps them for apps).
# It keeps every refusal, so it needs no refusal_persists; the server already applied the age.
SCRIPT_UNREAD_KEYS = ("site", "gpc_applied", "region", "dir", "age_of_consent", "minor")
SCRIPT_UNREAD_PURPOSE_FIELDS = frozenset({"refusal_persists"})
_NOT_FOR_SCRIPT = HTML_ONLY_PURPOSE_FIELDS | SCRIPT_UNREAD_PURPOSE_FIELDS
SCRIPT_RULE_FIELDS = frozenset(
    # Re-ask after a consent by days (the shortest 13 months can be: never late for TCF's "at
    # least every 13 months"), after a refusal by calendar months (never early for CCPA's
    # "wait 12 months").
    {"id", "gpc", "gpc_objects", "reprompt_days", "reprompt_after_refusal_months"}
)

# Characters that JSON allows but an inline <script> or a pre-ES2019 parser does not.
_SCRIPT_ESCAPES: tuple[tuple[bytes, bytes], ...] = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


# An attribute value that HTML allows without quotes and that needs no escape: the quotes are
# dropped from the rendered layers (each costs a backslash too inside the JSON string).
_QUOTED_PLAIN = re.compile(r'(?<=[a-z-])="([A-Za-z0-9_.:/-]+)"')


def _set(value: Any) -> bool:
    """Whether a config value says anything: not false, null or empty (0 is a value)."""
    return value is not False and value is not None and value != "" and value != []


def unquote_attributes(html: Any) -> Any:
    """``html`` with the quotes around plain attribute values dropped (HTML's unquoted syntax)."""
    return _QUOTED_PLAIN.sub(r"=\1", html) if isinstance(html, str) else html


def script_json(value: Any) -> bytes:
    """JSON that is safe to place inside a script: no `</script>`, `<!--` or line separators."""
    data = orjson.dumps(value)
    for raw, escaped in _SCRIPT_ESCAPES:
        data = data.replace(raw, escaped)
    return data


def source_hash(source: bytes) -> str:
    """The hash static/build.mjs writes into the build's first line."""
    return hashlib.sha256(source).hexdigest()[:16]


def fresh_build(path: Path, source: bytes, name: str = "consent.js") -> str | None:
    """The terser build (``npm run build``) of ``name`` if it exists and was made from
    ``source``."""
    try:
        first, _, code = path.read_text(encoding="utf-8").partition("\n")
    except OSError:
        return None
    return code.strip() if first == f"/*! {name} {source_hash(source)} */" else None


def minified(static_dir: Path, name: str, source: bytes) -> str:
    """``name`` as served: its terser build while that matches the source, else rjsmin's."""
    build = fresh_build(static_dir / name.replace(".js", ".min.js"), source, name)
    # No build, or a stale one: whitespace/comment minification keeps it correct.
    return build if build is not None else str(rjsmin.jsmin(source.decode("utf-8")))


@dataclass(frozen=True)
class Snippet:
    """The minified consent.js split around its config placeholder, and the minified CSS."""

    # The JS is static/consent.min.js (terser, `npm run build`) while that build matches
    # consent.js, else consent.js through rjsmin: a stale build is never served.

    head: bytes
    tail: bytes
    css: str
    # A short content hash of JS and CSS, for ETags and banner versions.
    digest: str
    # The styles of the preferences panel only: sent with that lazily loaded part.
    panel_css: str = ""
    # static/consent-more.js, minified: the code acting on choices, a script part.
    more: bytes = b""

    @classmethod
    def load(cls, static_dir: Path) -> Snippet:
        """Read and minify ``consent.js`` and ``consent.css`` from ``static_dir``."""
        js_path = static_dir / "consent.js"
        css_path = static_dir / "consent.css"
        try:
            js_source = js_path.read_bytes()
            css_source = css_path.read_text(encoding="utf-8")
            panel_source = (static_dir / "panel.css").read_text(encoding="utf-8")
            more_source = (static_dir / "consent-more.js").read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the snippet sources: {exc}",
                hint="static/ must hold consent.js, consent-more.js, consent.css and panel.css",
                where=str(static_dir),
            ) from exc
        js = minified(static_dir, "consent.js", js_source)
        more = minified(static_dir, "consent-more.js", more_source)
        parts = js.split(PLACEHOLDER)
        if len(parts) != 2:
            raise ConfigError(
                f"consent.js must contain {PLACEHOLDER} exactly once, found {len(parts) - 1}",
                hint="the server puts the visitor's config there",
                where=str(js_path),
            )
        css: str = rcssmin.cssmin(css_source)
        panel_css: str = rcssmin.cssmin(panel_source)
        digest = hashlib.sha256(f"{js}\0{css}\0{panel_css}\0{more}".encode()).hexdigest()[:16]
        return cls(parts[0].encode(), parts[1].encode(), css, digest, panel_css, more.encode())

    def assemble(self, config: Mapping[str, Any]) -> bytes:
        """The full consent.js with ``config`` inlined, slimmed to what the script reads."""
        return b"".join((self.head, script_json(self.inline_config(config)), self.tail))

    def inline_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` without the copy that the rendered HTML already carries, plus the CSS."""
        slim = dict(config)
        slim.setdefault("css", self.css)
        if isinstance(slim.get("texts"), Mapping):
            rule = slim.get("rule")
            honours = isinstance(rule, Mapping) and (rule.get("gpc") or rule.get("gpc_objects"))
            wanted = SCRIPT_TEXTS if honours else SCRIPT_TEXTS - {"gpc_status"}
            slim["texts"] = {k: v for k, v in slim["texts"].items() if k in wanted}
        if isinstance(slim.get("rule"), Mapping):
            slim["rule"] = {
                k: v for k, v in slim["rule"].items() if k in SCRIPT_RULE_FIELDS and _set(v)
            }
        for key in HTML_ONLY_KEYS:
            slim.pop(key, None)
        if isinstance(slim.get("purposes"), list):
            # A missing flag reads as false in the script: leave out the false, null and empty.
            slim["purposes"] = [
                {k: v for k, v in p.items() if k not in _NOT_FOR_SCRIPT and _set(v)}
                for p in slim["purposes"]
            ]
        mode = slim.get("consent_mode")
        if isinstance(mode, Mapping) and isinstance(mode.get("default"), Mapping):
            # The script passes the defaults to gtag as they are, wait_for_update included.
            wait = {"wait_for_update": mode["wait_for_update"]} if "wait_for_update" in mode else {}
            slim["consent_mode"] = {"default": {**mode["default"], **wait}}
        if isinstance(slim.get("cookie"), Mapping):
            slim["cookie"] = {k: v for k, v in slim["cookie"].items() if v != ""}
        for key in SCRIPT_UNREAD_KEYS:
            slim.pop(key, None)
        if not slim.get("theme"):
            slim.pop("theme", None)
        if isinstance(slim.get("html"), Mapping):
            slim["html"] = {k: unquote_attributes(v) for k, v in slim["html"].items()}
        return slim
