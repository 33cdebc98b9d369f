"""Compression at source: gzip and brotli variants made once per cached body, chosen per request.

A body is compressed when it enters the serving memo (gateway/serving/gateway.py), never per
request; a request only picks a variant by its ``Accept-Encoding`` (RFC 9110 §12.5.3), from a
small memo of the header values browsers actually send.
"""

from __future__ import annotations

from dataclasses import dataclass

import brotli  # type: ignore[import-untyped]
import deflate

IDENTITY, GZIP, BROTLI = "identity", "gzip", "br"
# Preferred first when a client weighs codings alike: the smallest.
CODINGS = (BROTLI, GZIP, IDENTITY)
# Once per cache entry, so the slowest settings: ~1 ms (libdeflate 12) and ~20 ms (brotli 11)
# for a 12-17 KB consent.js. libdeflate's level 12 is a better DEFLATE encoder than zlib's 9,
# readable by every gzip decoder: measured on the first visit, ~1.3 % fewer bytes (5,565 →
# 5,493 B for Japanese under PIPL) for ~0.7 ms instead of ~0.15 ms, once per cache entry.
GZIP_LEVEL = 12
BROTLI_QUALITY = 11
MIN_SIZE = 256  # smaller bodies gain less than a packet: sent as they are
CHOICES_MAX = 256  # distinct Accept-Encoding values remembered (browsers send a handful)
HEADER_MAX = 200  # longer values are parsed each time, never remembered
_ALIASES = {"x-gzip": GZIP}
UNNAMED_IDENTITY = 1e-9


@dataclass(frozen=True)
class Variant:
    """One encoding of a body: its bytes and its ETag (each encoding has its own)."""

    coding: str
    content: bytes
    etag: str


def compress(content: bytes, etag: str) -> dict[str, Variant]:
    """The identity body with its gzip and brotli variants, each only where it is smaller.

    ``etag`` is the identity body's (quoted); a variant's ETag adds its coding inside the
    quotes, so a cache or browser never takes one encoding's validator for another's.
    """
    plain = Variant(IDENTITY, content, etag)
    variants = {IDENTITY: plain}
    if len(content) < MIN_SIZE:
        return variants
    for coding, packed in (
        (GZIP, bytes(deflate.gzip_compress(content, GZIP_LEVEL))),
        (BROTLI, brotli.compress(content, quality=BROTLI_QUALITY)),
    ):
        if len(packed) < len(content):
            variants[coding] = Variant(coding, packed, f'{etag[:-1]}-{coding}"')
    return variants


def _weights(header: str) -> dict[str, float]:
    """Coding → q-value of an Accept-Encoding value; malformed members are skipped."""
    weights: dict[str, float] = {}
    for member in header.split(","):
        name, _, params = member.partition(";")
        coding = name.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        coding = _ALIASES.get(coding, coding)
        weights[coding] = max(q, weights.get(coding, q))  # a repeated coding: its best q
    return weights


def negotiate(header: str | None) -> str:
    """The coding to send for an ``Accept-Encoding`` value: ``br``, ``gzip`` or ``identity``.

    No header: identity. Otherwise each coding takes its own q-value, else that of ``*``
    (identity, unnamed, stays acceptable below every named coding unless ``*;q=0`` refuses
    it); q=0 refuses; the highest q wins, ties going to the smaller encoding. When nothing is
    acceptable the body is sent as it is, as RFC 9110 advises, rather than a 406.
    """
    if header is None:
        return IDENTITY
    weights = _weights(header)
    star = weights.get("*")
    best, best_q = IDENTITY, 0.0
    for coding in CODINGS:
        q = weights.get(coding, star)
        if q is None:
            # Identity unnamed stays acceptable, below any coding the client names.
            q = UNNAMED_IDENTITY if coding == IDENTITY else 0.0
        if q > best_q:
            best, best_q = coding, q
    return best


class Chooser:
    """``negotiate`` with a memo of the header values seen (bounded; long values not kept)."""

    def __init__(self) -> None:
        self._seen: dict[str | None, str] = {None: IDENTITY}

    def __call__(self, header: str | None) -> str:
        choice = self._seen.get(header)
        if choice is None:
            choice = negotiate(header)
            if header is not None and len(header) <= HEADER_MAX:
                if len(self._seen) >= CHOICES_MAX:
                    self._seen = {None: IDENTITY}
                self._seen[header] = choice
        return choice
