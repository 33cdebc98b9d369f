"""Lazily loaded parts of the snippet: what the first paint does not need, fetched on demand.

consent.js carries the first layer only; a part (the preferences panel today) is a small JSON
document the snippet fetches from ``/v1/sites/{site}/parts/{part}`` when the visitor opens it,
with the query that pins the visitor's locale, region and age as the snippet was resolved
(``part_query``). It is served like the config: memoized, compressed at source, ETag, Vary.
A new part is one entry in ``PARTS``; the snippet loads any of them with ``part(name)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from gateway.core.model import ResolvedBanner
from gateway.serving.snippet import Snippet, unquote_attributes

PartBuilder = Callable[[ResolvedBanner, Snippet], dict[str, Any]]


def _preferences(resolved: ResolvedBanner, snippet: Snippet) -> dict[str, Any]:
    """The per-purpose panel: its rendered HTML and the styles only it uses."""
    return {"html": unquote_attributes(resolved.preferences_html), "css": snippet.panel_css}


PARTS: dict[str, PartBuilder] = {"preferences": _preferences}
# Script parts: the same for every visitor (static/consent-more.js: the code acting on a
# choice), loaded by the snippet as a script with its own nonce.
SCRIPTS: dict[str, Callable[[Snippet], bytes]] = {"more.js": lambda snippet: snippet.more}


def exists(name: str) -> bool:
    return name in PARTS or name in SCRIPTS


def part_document(name: str, resolved: ResolvedBanner, snippet: Snippet) -> dict[str, Any]:
    """The JSON document of part ``name`` (one of ``PARTS``) for this resolved banner."""
    return PARTS[name](resolved, snippet)


def part_query(language: str, region: str | None, age: int | None) -> str:
    """The query a part is fetched with: it resolves the banner the snippet was built from."""
    params = {"lang": language, "region": region, "age": None if age is None else str(age)}
    return urlencode({k: v for k, v in params.items() if v is not None})
