"""The embeddable snippet: static/ minified once at start-up, config inlined per response."""

from __future__ import annotations

import hashlib
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
SCRIPT_TEXTS = frozenset({"saved"})
HTML_ONLY_PURPOSE_FIELDS = frozenset(
    {"name", "description", "recipients", "retention", "wechat_apis"}
)
HTML_ONLY_KEYS = ("privacy_policy_url", "controller", "wechat")
SCRIPT_RULE_FIELDS = frozenset(
    {"id", "model", "gpc", "default_granted", "reprompt_days", "reprompt_after_refusal_days"}
)

# Characters that JSON allows but an inline <script> or a pre-ES2019 parser does not.
_SCRIPT_ESCAPES: tuple[tuple[bytes, bytes], ...] = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def script_json(value: Any) -> bytes:
    """JSON that is safe to place inside a script: no `</script>`, `<!--` or line separators."""
    data = orjson.dumps(value)
    for raw, escaped in _SCRIPT_ESCAPES:
        data = data.replace(raw, escaped)
    return data


def source_hash(source: bytes) -> str:
    """The hash static/build.mjs writes into the build's first line."""
    return hashlib.sha256(source).hexdigest()[:16]


def fresh_build(path: Path, source: bytes) -> str | None:
    """The terser build (``npm run build``) if it exists and was made from ``source``."""
    try:
        first, _, code = path.read_text(encoding="utf-8").partition("\n")
    except OSError:
        return None
    return code.strip() if first == f"/*! consent.js {source_hash(source)} */" else None


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

    @classmethod
    def load(cls, static_dir: Path) -> Snippet:
        """Read and minify ``consent.js`` and ``consent.css`` from ``static_dir``."""
        js_path = static_dir / "consent.js"
        css_path = static_dir / "consent.css"
        try:
            js_source = js_path.read_bytes()
            css_source = css_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the snippet sources: {exc}",
                hint="static/ must hold consent.js and consent.css",
                where=str(static_dir),
            ) from exc
        js = fresh_build(static_dir / "consent.min.js", js_source)
        if js is None:
            # No build, or a stale one: whitespace/comment minification keeps it correct.
            js = rjsmin.jsmin(js_source.decode("utf-8"))
        parts = js.split(PLACEHOLDER)
        if len(parts) != 2:
            raise ConfigError(
                f"consent.js must contain {PLACEHOLDER} exactly once, found {len(parts) - 1}",
                hint="the server puts the visitor's config there",
                where=str(js_path),
            )
        css: str = rcssmin.cssmin(css_source)
        digest = hashlib.sha256(f"{js}\0{css}".encode()).hexdigest()[:16]
        return cls(head=parts[0].encode(), tail=parts[1].encode(), css=css, digest=digest)

    def assemble(self, config: Mapping[str, Any]) -> bytes:
        """The full consent.js with ``config`` inlined, slimmed to what the script reads."""
        return b"".join((self.head, script_json(self.inline_config(config)), self.tail))

    def inline_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` without the copy that the rendered HTML already carries, plus the CSS."""
        slim = dict(config)
        slim.setdefault("css", self.css)
        if isinstance(slim.get("texts"), Mapping):
            slim["texts"] = {k: v for k, v in slim["texts"].items() if k in SCRIPT_TEXTS}
        if isinstance(slim.get("rule"), Mapping):
            slim["rule"] = {k: v for k, v in slim["rule"].items() if k in SCRIPT_RULE_FIELDS}
        for key in HTML_ONLY_KEYS:
            slim.pop(key, None)
        if isinstance(slim.get("purposes"), list):
            slim["purposes"] = [
                {k: v for k, v in p.items() if k not in HTML_ONLY_PURPOSE_FIELDS}
                for p in slim["purposes"]
            ]
        return slim
