"""Accept-Language parsing and locale negotiation over CLDR data (Babel): pure, no web framework."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import NamedTuple

from babel import localedata
from babel.core import get_global
from cachetools import LRUCache

from gateway.core.errors import BadRequest, ConfigError

MAX_HEADER_LENGTH = 1024
MAX_RANGES = 32
MAX_TAG_LENGTH = 35  # RFC 5646 §4.4.1: 35 characters hold every tag that matters in practice

# One Accept-Language element: an RFC 4647 basic range (leniently also with "_", which old Java
# and Android clients send) and an optional RFC 9110 §12.4.2 weight (at most three decimals, ≤ 1).
_ELEMENT = re.compile(
    r"(?P<range>\*|[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*)"
    r"(?:[ \t]*;[ \t]*[qQ][ \t]*=[ \t]*(?P<q>0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?))?"
)
_WEIGHT_LIKE = re.compile(r"[^;]*;[ \t]*[qQ][ \t]*=")
_OWS = " \t"
# The BCP 47 subset a `?lang=` override may use: language, script, region, variants.
_LANG_TAG = re.compile(
    r"(?P<language>[A-Za-z]{2,3}|[A-Za-z]{5,8})"
    r"(?:[-_](?P<script>[A-Za-z]{4}))?"
    r"(?:[-_](?P<region>[A-Za-z]{2}|[0-9]{3}))?"
    r"(?P<variants>(?:[-_](?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*)"
)


def _header_error(detail: str) -> BadRequest:
    return BadRequest("invalid_header", f"Accept-Language: {detail}", field="Accept-Language")


def _excerpt(text: str) -> str:
    """Quote client input in an error without echoing an arbitrary amount of it."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


@lru_cache(maxsize=1024)  # a few hundred ranges cover nearly all real headers
def _canonical_case(range_: str) -> str:
    """RFC 5646 §2.1.1 case and "-": language lower, script title, region upper, the rest lower."""
    if "-" not in range_ and "_" not in range_:
        return range_.lower()  # the common case ("de", "fr") without the subtag walk
    subtags = range_.replace("_", "-").split("-")
    out = [subtags[0].lower()]
    for tag in subtags[1:]:
        if len(out[-1]) == 1:  # after a singleton (x-, u-, …) everything stays lower case
            out.extend(t.lower() for t in subtags[len(out) :])
            break
        if len(tag) == 4 and tag.isalpha():
            out.append(tag.title())
        elif (len(tag) == 2 and tag.isalpha()) or (len(tag) == 3 and tag.isdigit()):
            out.append(tag.upper())
        else:
            out.append(tag.lower())
    return "-".join(out)


def parse_accept_language(header: str) -> tuple[tuple[str, float], ...]:
    """Language ranges of an Accept-Language header, best first; q=0 ranges are dropped."""
    if len(header) > MAX_HEADER_LENGTH:
        raise _header_error(f"longer than {MAX_HEADER_LENGTH} characters")
    if not header.isascii():
        raise _header_error("contains non-ASCII characters")
    items = [item.strip(_OWS) for item in header.split(",")]
    items = [item for item in items if item]  # RFC 9110 §5.6.1: empty list elements are allowed
    if len(items) > MAX_RANGES:
        raise _header_error(f"more than {MAX_RANGES} language ranges")
    ranges: list[tuple[str, float]] = []
    for item in items:
        match = _ELEMENT.fullmatch(item)
        if match is None:
            problem = "q-value" if _WEIGHT_LIKE.match(item) else "language range"
            raise _header_error(f"invalid {problem} in {_excerpt(item)}")
        q = float(match["q"]) if match["q"] else 1.0
        if q > 0:
            range_ = match["range"]
            ranges.append((range_ if range_ == "*" else _canonical_case(range_), q))
    ranges.sort(key=lambda pair: -pair[1])  # list.sort is stable: ties keep header order
    return tuple(ranges)


def parse_lang_param(value: str) -> str:
    """Validate a `?lang=` override (BCP 47 tag or Babel identifier) into a Babel identifier."""
    match = _LANG_TAG.fullmatch(value) if len(value) <= MAX_TAG_LENGTH else None
    if match is None:
        raise BadRequest(
            "invalid_parameter",
            f"lang: {_excerpt(value)} is not a language tag such as 'de', 'pt-BR' or 'zh-Hant'",
            field="lang",
        )
    parts = [match["language"].lower()]
    if match["script"]:
        parts.append(match["script"].title())
    if match["region"]:
        parts.append(match["region"].upper())
    # Babel spells variants in upper case (ca_ES_VALENCIA).
    parts.extend(v.upper() for v in re.split("[-_]", match["variants"]) if v)
    return "_".join(parts)


class _Tag(NamedTuple):
    """A language tag with likely subtags filled in, and its CLDR fallback chain."""

    identifier: str
    script: str | None  # the maximized script, e.g. "Hant" for zh-TW
    region: str | None  # the maximized region, e.g. "BR" for pt
    chain: tuple[str, ...]  # identifier, then its CLDR parents up to (not including) root


def _likely(*parts: str | None) -> tuple[str | None, str | None]:
    """CLDR likely (script, region) for this key, e.g. zh_TW → (Hant, TW); Nones when unknown."""
    likely: Mapping[str, str] = get_global("likely_subtags")
    found = likely.get("_".join(p for p in parts if p))
    if found is None:
        return None, None
    _language, script, region = found.split("_")  # always language_Script_REGION in CLDR
    return script, region


def _default_script(language: str) -> str | None:
    return _likely(language)[0]


@lru_cache(maxsize=4096)
def _analyse(tag: str) -> _Tag | None:
    """Canonicalize, maximize and chain one tag; None when it is not a language tag at all."""
    match = _LANG_TAG.fullmatch(tag.replace("_", "-")) if len(tag) <= MAX_TAG_LENGTH else None
    if match is None:
        return None
    language = match["language"].lower()
    script = match["script"].title() if match["script"] else None
    region = match["region"].upper() if match["region"] else None
    variants = [v.upper() for v in match["variants"].split("-") if v]
    # Deprecated and macro-language codes (iw → he, cmn → zh, sh → sr_Latn); missing subtags only.
    alias = get_global("language_aliases").get(language)
    if alias:
        alias_language, _, rest = alias.partition("_")
        language = alias_language
        for extra in rest.split("_") if rest else ():
            if len(extra) == 4 and script is None:
                script = extra
            elif len(extra) != 4 and region is None:
                region = extra
    if region is not None:
        replacement = get_global("territory_aliases").get(region)
        region = replacement[0] if replacement else region  # UK → GB
    # TR35 "Add Likely Subtags" lookup order (lang_script_region, lang_region, lang_script, lang).
    likely: tuple[str | None, str | None] = (None, None)
    for key_script, key_region in ((script, region), (None, region), (script, None), (None, None)):
        found = _likely(language, key_script, key_region)
        if found != (None, None):
            likely = found
            break
    max_script = script or likely[0]
    max_region = region or likely[1]
    # Write the script when it is not the language's default or CLDR has script-level locales
    # (zh_Hans, sr_Latn): that is how Babel and the locales/ folders name such locales.
    default_script = _default_script(language)
    with_script = max_script is not None and (
        max_script != default_script or localedata.exists(f"{language}_{max_script}")
    )
    parts = [language, *([max_script] if with_script and max_script else [])]
    parts += [*([region] if region else []), *variants]
    identifier = "_".join(parts)
    return _Tag(identifier, max_script, max_region, _chain(identifier, default_script))


def _chain(identifier: str, default_script: str | None) -> tuple[str, ...]:
    """The identifier and its CLDR parent locales (explicit exceptions, else truncation)."""
    parents: Mapping[str, str] = get_global("parent_exceptions")
    chain = [identifier]
    while True:
        current = chain[-1]
        parent = parents.get(current)
        if parent is None:
            head, _, last = current.rpartition("_")
            # TR35: truncating away a non-default script goes to root (zh_Hant is not zh).
            if not head or (len(last) == 4 and last.isalpha() and last != default_script):
                break
            parent = head
        if parent == "root" or parent in chain:
            break
        chain.append(parent)
    return tuple(chain)


class _Candidate(NamedTuple):
    """An offered locale as seen from one of its CLDR ancestors."""

    distance: int  # steps from the offer up to that ancestor: 0 is the offer itself
    order: int  # position in the site's list
    region: str | None  # the offer's maximized region
    identifier: str  # exactly as the site spells it (its locales/ folder)


# CLDR ancestor (e.g. "pt", "zh_Hant", "en_001") → the offers that descend from it.
_Index = Mapping[str, tuple[_Candidate, ...]]


def _index(available: Sequence[str]) -> _Index:
    """Index the site's locales by every CLDR ancestor, so a lookup walks one short chain."""
    index: dict[str, list[_Candidate]] = {}
    for order, identifier in enumerate(available):
        tag = _analyse(identifier)
        if tag is None or tag.script is None:  # no script: CLDR does not know the language
            raise ConfigError(
                f"unknown locale {identifier!r}",
                hint="use a Babel/CLDR identifier such as 'de', 'pt_BR', 'zh_Hant' or 'es_419'",
            )
        for distance, ancestor in enumerate(tag.chain):
            candidate = _Candidate(distance, order, tag.region, identifier)
            index.setdefault(ancestor, []).append(candidate)
    return {ancestor: tuple(candidates) for ancestor, candidates in index.items()}


def _best(wanted: _Tag, index: _Index) -> str | None:
    """The offer sharing the most specific CLDR ancestor with the wanted tag, if any.

    Ties prefer the offer closest to that ancestor (`pt` over `pt_BR` for pt-PT), then the
    one in the wanted tag's likely region (pt_BR over pt_PT for plain `pt`), then site order.
    """
    for ancestor in wanted.chain:
        candidates = index.get(ancestor)
        if candidates:
            best = min(candidates, key=lambda c: (c.distance, c.region != wanted.region, c.order))
            return best.identifier
    return None


# One-way pairs from CLDR's languageMatching (languageInfo.xml), which Babel does not ship: a
# reader of the first is well served by the second when the site does not offer the first.
_SUBSTITUTES: Mapping[str, str] = {"yue": "zh_Hant", "gsw": "de", "lb": "de"}


def _negotiate(preferred: Sequence[str], offers: _Index, default: str) -> str:
    for range_ in preferred:
        if range_ == "*":
            return default
        wanted = _analyse(range_)
        if wanted is None:
            continue
        found = _best(wanted, offers)
        substitute = _SUBSTITUTES.get(wanted.identifier.partition("_")[0])
        if found is None and substitute is not None:
            found = _best(_analyse(substitute) or wanted, offers)
        if found is not None:
            return found
    return default


def negotiate(preferred: Sequence[str], available: Sequence[str], default: str) -> str:
    """The first preferred range (BCP 47 or Babel) that an available locale serves, else default.

    Ranges are matched through CLDR likely subtags and parent locales: zh-TW → zh_Hant,
    es-MX → es_419, no → nb, en-GB → en. Scripts never cross (zh-TW does not get zh_Hans),
    but regions do within a language: a pt-PT visitor gets pt_BR when the site has no `pt` or
    `pt_PT`, since Brazilian Portuguese serves them better than the default language would.
    A few CLDR one-way substitutes apply when nothing else matched (yue → zh_Hant, gsw → de).
    """
    return _negotiate(preferred, _index(available), default)


class Negotiator:
    """One site's negotiation, cached per raw (Accept-Language, ?lang=) pair."""

    def __init__(self, available: Sequence[str], default: str, *, cache_size: int = 2048) -> None:
        if default not in available:
            raise ConfigError(
                f"default locale {default!r} is not among the offered locales {list(available)}",
                hint="add it to `locales` in site.toml",
            )
        self.available = tuple(available)
        self.default = default
        self._offers = _index(available)
        self._cache: LRUCache[tuple[str | None, str | None], str] = LRUCache(cache_size)
        # LRUCache reorders itself on reads; the lock keeps it sound if a thread pool calls us.
        self._lock = threading.Lock()

    def choose(self, accept_language: str | None, lang_param: str | None) -> str:
        """The locale for this request; raises BadRequest for a malformed header or `?lang=`.

        An empty `?lang=` (a form or URL template left blank) means no override.
        """
        key = (accept_language, lang_param)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        preferred = [parse_lang_param(lang_param)] if lang_param else []
        if accept_language:
            preferred += [range_ for range_, _q in parse_accept_language(accept_language)]
        chosen = _negotiate(preferred, self._offers, self.default)
        with self._lock:
            self._cache[key] = chosen
        return chosen


@lru_cache(maxsize=256)
def bcp47(identifier: str) -> str:
    """The BCP 47 spelling of a Babel identifier, for `lang` attributes: zh_Hans → zh-Hans."""
    return identifier.replace("_", "-")


# The scripts CLDR writes right to left: the character order of every CLDR locale follows
# its (maximized) script, so no locale's data (~1 MB each) is loaded to learn it.
# tests/test_i18n.py checks this set against Babel's `text_direction` of every CLDR locale.
RTL_SCRIPTS = frozenset({"Adlm", "Arab", "Hebr", "Nkoo", "Rohg", "Syrc", "Thaa"})


@lru_cache(maxsize=256)
def direction(identifier: str) -> str:
    """Direction for HTML `dir`: "rtl" or "ltr" (ar, he, fa, ur are rtl; CLDR's vertical `ttb`,
    the Mongolian script, is "ltr" here: `dir` knows no vertical order)."""
    tag = _analyse(identifier)
    # The nearest CLDR locale in the chain: ar_DE has no data of its own, but ar does.
    if tag is None or not any(localedata.exists(name) for name in tag.chain):
        raise ConfigError(f"unknown locale {identifier!r}", hint="use a Babel/CLDR identifier")
    return "rtl" if tag.script in RTL_SCRIPTS else "ltr"
