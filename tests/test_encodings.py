"""Compression at source: gzip and brotli variants of each cached body, chosen per request."""

from __future__ import annotations

import gzip
import zlib
from urllib.parse import quote

import brotli  # type: ignore[import-untyped]
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from gateway.serving.encodings import Chooser, compress, negotiate
from gateway.serving.gateway import ANSWERS_MAX_BYTES
from tests.asgi import call, scope_for

SERVED = [
    "/v1/sites/demo/config?region=DE&lang=de",
    "/v1/sites/demo/consent.js?region=DE&lang=de",
    "/v1/sites/demo/banner?region=DE&lang=de",
    "/v1/sites/demo/parts/preferences?region=DE&lang=de",
]


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        (None, "identity"),
        ("", "identity"),
        ("gzip, deflate, br, zstd", "br"),
        ("gzip, deflate", "gzip"),
        ("x-gzip", "gzip"),
        ("br;q=0.5, gzip;q=0.8", "gzip"),
        ("br;q=0, gzip;q=0", "identity"),
        ("gzip;q=0", "identity"),
        ("*", "br"),
        ("*;q=0.5, br;q=0", "gzip"),
        ("identity;q=0, gzip;q=0.1", "gzip"),
        ("*;q=0", "identity"),  # nothing acceptable: sent as it is (RFC 9110 §12.5.3)
        ("identity", "identity"),
        ("deflate", "identity"),
        ("BR;Q=1", "br"),
        ("gzip;q=abc, br;q=2", "identity"),  # malformed weights refuse their coding
        ("gzip;q=0.001, identity;q=0", "gzip"),
    ],
)
def test_negotiation_follows_q_values_identity_and_star(header: str | None, chosen: str) -> None:
    assert negotiate(header) == chosen
    assert Chooser()(header) == chosen


@given(st.text(max_size=300))
def test_any_header_value_negotiates_to_a_coding_we_have(header: str) -> None:
    """Threat: a hostile Accept-Encoding value crashes the hot path or picks nothing."""
    choose = Chooser()
    assert choose(header) in ("br", "gzip", "identity")
    assert choose(header) == negotiate(header)


def test_the_memo_of_header_values_stays_bounded() -> None:
    choose = Chooser()
    for i in range(10_000):
        choose(f"gzip;q=0.{i % 10}, x{i}")
    choose("g" * 10_000)
    assert len(choose._seen) <= 257


def test_variants_decode_to_the_body_and_carry_their_own_etag() -> None:
    body = b"consent " * 500
    variants = compress(body, '"abc"')
    assert variants["identity"].content == body
    assert gzip.decompress(variants["gzip"].content) == body
    assert brotli.decompress(variants["br"].content) == body
    assert {v.etag for v in variants.values()} == {'"abc"', '"abc-gzip"', '"abc-br"'}
    assert set(compress(b"tiny", '"t"')) == {"identity"}  # not worth a coding


def test_gzip_is_the_smaller_encoder_s_stream_read_by_any_decoder(client: TestClient) -> None:
    """The gzip variant comes from libdeflate's best level: fewer bytes than zlib's best for
    the first visit, a standard stream any gzip decoder reads, and the same bytes each time
    (no timestamp), so every worker and node sends the same bytes under one ETag."""
    body = client.get(SERVED[1], headers={"Accept-Encoding": "identity"}).content
    packed = compress(body, '"e"')["gzip"].content
    assert len(packed) < len(gzip.compress(body, compresslevel=9, mtime=0))
    assert zlib.decompress(packed, wbits=31) == gzip.decompress(packed) == body
    assert packed[4:8] == bytes(4)  # MTIME 0
    assert compress(body, '"e"')["gzip"].content == packed


@pytest.mark.parametrize("path", SERVED)
def test_each_encoding_decodes_to_the_identical_body(client: TestClient, path: str) -> None:
    plain = client.get(path, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert "content-encoding" not in plain.headers
    assert int(plain.headers["content-length"]) == len(plain.content)
    etags = {plain.headers["etag"]}
    for coding, decode in (("gzip", gzip.decompress), ("br", brotli.decompress)):
        raw = client.get(path, headers={"Accept-Encoding": coding})
        assert raw.headers["content-encoding"] == coding
        assert "Accept-Encoding" in raw.headers["vary"]
        # httpx decodes the body; the raw bytes are what Content-Length counts.
        stream = client.build_request("GET", path, headers={"Accept-Encoding": coding})
        sent = client.send(stream, stream=True)
        packed = b"".join(sent.iter_raw())
        sent.close()
        assert int(raw.headers["content-length"]) == len(packed) < len(plain.content)
        assert decode(packed) == plain.content
        assert raw.content == plain.content
        etags.add(raw.headers["etag"])
    assert len(etags) == 3  # an ETag per encoding
    assert "Accept-Encoding" in plain.headers["vary"]


def test_304_per_variant_and_q0_respected(client: TestClient) -> None:
    path = SERVED[1]
    gz = client.get(path, headers={"Accept-Encoding": "gzip"})
    br = client.get(path, headers={"Accept-Encoding": "br, gzip"})
    assert br.headers["content-encoding"] == "br"
    for response, coding in ((gz, "gzip"), (br, "br")):
        again = client.get(
            path, headers={"Accept-Encoding": coding, "If-None-Match": response.headers["etag"]}
        )
        assert again.status_code == 304
        assert again.headers["etag"] == response.headers["etag"]
        assert "Accept-Encoding" in again.headers["vary"]
    # The gzip variant's ETag does not validate the brotli variant, nor the plain body.
    other = client.get(path, headers={"Accept-Encoding": "br", "If-None-Match": gz.headers["etag"]})
    assert other.status_code == 200
    assert other.headers["content-encoding"] == "br"
    refused = client.get(path, headers={"Accept-Encoding": "br;q=0, gzip;q=0"})
    assert "content-encoding" not in refused.headers


def test_head_carries_the_variants_length(client: TestClient) -> None:
    get = client.get(SERVED[0], headers={"Accept-Encoding": "gzip"})
    head = client.head(SERVED[0], headers={"Accept-Encoding": "gzip"})
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["content-encoding"] == "gzip"


def test_the_part_is_the_localized_panel_with_its_styles(client: TestClient) -> None:
    part = client.get("/v1/sites/demo/parts/preferences?region=DE&lang=de")
    assert part.headers["content-type"] == "application/json"
    assert part.headers["access-control-allow-origin"] == "*"
    body = orjson.loads(part.content)
    assert "cg-prefs" in body["html"]
    assert "lang=de" in body["html"]
    assert "role=switch" in body["css"]
    assert client.get("/v1/sites/demo/parts/nope").status_code == 404
    assert client.get("/v1/sites/nope/parts/preferences").status_code == 404


def test_the_snippet_names_its_parts_query(client: TestClient) -> None:
    js = client.get("/v1/sites/demo/consent.js?region=US-CA&lang=es&age=15").text
    assert '"part":"lang=es\\u0026region=US-CA\\u0026age=15"' in js


def test_the_memo_counts_every_variant_against_its_bound(client: TestClient) -> None:
    app = client.app
    gateway = app.state.gateway  # type: ignore[attr-defined]

    async def run() -> None:
        for coding in ("identity", "gzip", "br"):
            await call(app, scope_for(app, "GET", SERVED[1], [("accept-encoding", coding)]))

    client.portal.call(run)  # type: ignore[union-attr]
    assert len(gateway.answers) == 1  # one entry serves every encoding
    plain = client.get(SERVED[1], headers={"Accept-Encoding": "identity"}).content
    assert gateway.answers.bytes > len(plain) * 1.3  # the compressed variants are counted
    assert gateway.answers.bytes <= ANSWERS_MAX_BYTES
    assert gateway.bodies_bytes() > len(plain) * 1.3


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    part=st.text(min_size=1, max_size=80),
    query=st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=120),
    coding=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=120),
)
def test_hostile_part_names_queries_and_codings_get_a_precise_4xx_never_a_500(
    client: TestClient, part: str, query: str, coding: str
) -> None:
    """Threats: path traversal or junk in the part name, junk queries and Accept-Encoding values
    on the parts endpoint; answered 200, 400 or 404 with a JSON error, never a 500."""
    path = f"/v1/sites/demo/parts/{quote(part, safe='')}?{quote(query, safe='=&')}"
    response = client.get(path, headers={"Accept-Encoding": coding})
    assert response.status_code in (200, 400, 404, 414)
    if response.status_code >= 400:
        assert response.json()["error"]
