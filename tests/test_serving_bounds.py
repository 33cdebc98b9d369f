"""Outside input cannot grow the serving caches without bound (security review §5).

Each test replays one of the review's memory attacks at a smaller scale and checks the
caches' own counters: entries and bytes stay under their bounds, and the raw input (query
string, If-None-Match, Host) is never part of a key.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from gateway.app import GatewayApp, create_app
from gateway.serving.gateway import ANSWERS_MAX_BYTES, ANSWERS_MAX_ENTRIES, BODIES_MAX_BYTES
from tests.asgi import Answer, call, scope_for
from tests.helpers import make_settings

CONFIG = "/v1/sites/demo/config"


@pytest.fixture
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("bounds"))
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as c:
        yield c


def _run(client: TestClient, requests: list[tuple[str, list[tuple[str, str]]]]) -> list[Answer]:
    """Send many requests through the whole ASGI app in one go (the test client is slow)."""
    app = client.app
    assert isinstance(app, GatewayApp)

    async def run() -> list[Answer]:
        return [
            await call(app, scope_for(app, "GET", target, headers)) for target, headers in requests
        ]

    return client.portal.call(run)  # type: ignore[union-attr]


def test_twenty_thousand_distinct_queries_keep_the_answer_memo_at_one_entry(
    client: TestClient,
) -> None:
    # The review's attack: distinct junk parameters, each a new memo key (1 GB at 60 KB each).
    pad = "p" * 4000
    answers = _run(client, [(f"{CONFIG}?region=DE&n{i}={pad}", []) for i in range(20_000)])
    assert {a[0] for a in answers} == {200}
    memo = client.app.state.gateway.answers  # type: ignore[attr-defined]
    assert len(memo) == 1
    assert memo.bytes < 64 * 1024


def test_if_none_match_is_compared_after_the_lookup_never_stored(client: TestClient) -> None:
    first = _run(client, [(CONFIG + "?region=DE", [])])[0]
    etag = dict(first[1])[b"etag"].decode()
    junk = [
        (CONFIG + "?region=DE", [("if-none-match", f'"{i:06d}{"x" * 4000}"')]) for i in range(1_000)
    ]
    answers = _run(client, [*junk, (CONFIG + "?region=DE", [("if-none-match", f"W/{etag}")])])
    assert [a[0] for a in answers] == [200] * 1_000 + [304]
    assert answers[-1][2] == b""
    memo = client.app.state.gateway.answers  # type: ignore[attr-defined]
    assert len(memo) == 1


def test_a_4_mb_if_none_match_is_refused_with_431(client: TestClient) -> None:
    r = client.get(CONFIG, headers={"If-None-Match": '"' + "x" * (4 << 20) + '"'})
    assert r.status_code == 431
    assert r.json()["error"] == "header_too_large" and r.json()["field"] == "if-none-match"
    assert len(client.app.state.gateway.answers) == 0  # type: ignore[attr-defined]


def test_distinct_hosts_keep_memo_and_bodies_under_their_byte_bounds(client: TestClient) -> None:
    # The review's attack: a new Host per request on consent.js (365 MB of 17 KB bodies).
    requests = [
        ("/v1/sites/demo/consent.js?region=DE", [("host", f"h{i}.example")]) for i in range(3_000)
    ]
    answers = _run(client, requests)
    assert {a[0] for a in answers} == {200}
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    memo = gateway.answers
    assert 0 < len(memo) < 3_000  # the byte bound was reached and the memo started over
    assert memo.bytes <= ANSWERS_MAX_BYTES and len(memo) <= ANSWERS_MAX_ENTRIES
    assert gateway.bodies_bytes() <= BODIES_MAX_BYTES


def test_long_accept_language_values_are_answered_but_never_remembered(
    client: TestClient,
) -> None:
    # Distinct long (valid) headers would otherwise each take an entry with a long key.
    values = [", ".join(["de-DE;q=0.9"] * 20) + f", x-{i:04d};q=0.1" for i in range(200)]
    assert all(len(v) > 200 for v in values)
    answers = _run(client, [(CONFIG + "?region=DE", [("accept-language", v)]) for v in values])
    assert {a[0] for a in answers} == {200}
    assert len(client.app.state.gateway.answers) == 0  # type: ignore[attr-defined]
