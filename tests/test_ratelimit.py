"""Write flooding: per-client and per-subject token buckets answer 429 with Retry-After.

The review's single client wrote 96,765 records in 15 s and filled a 2,000-record outbox in
0.42 s, after which every visitor got 503.
"""

from __future__ import annotations

import os
import sys
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.core.ratelimit import (
    RateLimited,
    SharedTables,
    TokenBuckets,
    WriteLimits,
    client_key,
    retry_after,
)
from gateway.core.settings import Settings
from tests.helpers import make_settings
from tests.pg import ORIGIN, consent_body

URL = "/v1/sites/demo/consents"


def test_bucket_allows_a_burst_then_the_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3, max_keys=10)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 0.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert buckets.take("a", 0.5) == 0.0
    assert buckets.take("b", 0.5) == 0.0  # keys are independent
    assert buckets.take("a", 100.0) == 0.0  # refilled, but never past the burst
    assert [buckets.take("a", 100.0) for _ in range(3)][-1] > 0


def test_bucket_table_is_bounded_against_address_floods() -> None:
    """Memory threat: one request from each of a million addresses keeps 1,000 buckets."""
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=1000)
    for i in range(1_000_000):
        buckets.take(i, 0.0)
    assert len(buckets) == 1000
    assert buckets.take(999_999, 0.0) > 0  # the most recent keys are the ones kept
    assert buckets.take(0, 0.0) == 0.0  # the oldest was dropped: it starts afresh


def test_the_workers_of_a_node_take_from_one_bucket() -> None:
    """Multiplying threat: under ``serve --workers N`` a client whose connections land on
    every worker would get N times its limit. The supervisor makes the tables in shared
    memory before it forks; a write taken in one process counts in the other."""
    shared = SharedTables(max_keys=100)
    mine = TokenBuckets(rate=1 / 60, burst=3, max_keys=100, shared=shared.table("client"))
    pid = os.fork()
    if pid == 0:  # another worker: two writes of the client's three
        theirs = TokenBuckets(rate=1 / 60, burst=3, max_keys=100, shared=shared.table("client"))
        os._exit(0 if [theirs.take("203.0.113.9", 10.0) for _ in range(2)] == [0.0] * 2 else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert mine.take("203.0.113.9", 10.0) == 0.0  # the third
    assert mine.take("203.0.113.9", 10.0) > 0  # the other worker's writes counted here
    assert len(mine) == 1
    # Each table of the node's memory is its own: the subject table never saw this key.
    subjects = TokenBuckets(rate=1 / 60, burst=3, max_keys=100, shared=shared.table("subject"))
    assert subjects.take("203.0.113.9", 10.0) == 0.0
    with pytest.raises(ValueError, match="another max_keys"):
        TokenBuckets(rate=1.0, burst=1, max_keys=10, shared=shared.table("admin"))


def test_write_limits_take_the_node_tables_they_are_given() -> None:
    shared = SharedTables(max_keys=20_000)
    settings = Settings(client_writes_per_minute=2, client_write_burst=2)
    one, two = WriteLimits(settings, shared=shared), WriteLimits(settings, shared=shared)
    one.check("198.51.100.7", "demo", "s1")
    two.check("198.51.100.7", "demo", "s2")
    with pytest.raises(RateLimited):  # two writes from the address, on two "workers"
        one.check("198.51.100.7", "demo", "s3")


def test_bucket_rejects_nonsense_limits() -> None:
    for rate, burst, keys in ((0, 1, 1), (1, 0, 1), (1, 1, 0)):
        with pytest.raises(ValueError, match="rate must be positive"):
            TokenBuckets(rate, burst, keys)


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert [retry_after(w) for w in (0.01, 1.0, 1.2, 59.9)] == [1, 1, 2, 60]


def test_ipv6_clients_are_limited_by_their_64() -> None:
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("192.0.2.1") != client_key("192.0.2.2")


def test_write_limits_per_client_and_per_subject(tmp_path: Path) -> None:
    now = [0.0]
    settings = make_settings(
        tmp_path,
        client_writes_per_minute=60,
        client_write_burst=2,
        subject_writes_per_minute=6,
        subject_write_burst=1,
    )
    limits = WriteLimits(settings, clock=lambda: now[0])
    limits.check("192.0.2.1", "demo", "alice")
    with pytest.raises(RateLimited) as info:
        limits.check("192.0.2.2", "demo", "alice")  # another address, same subject
    assert info.value.status_code == 429 and info.value.retry_after == 10
    limits.check("192.0.2.1", "demo", "bob")
    with pytest.raises(RateLimited, match="this address"):
        limits.check("192.0.2.1", "demo", "carol")
    now[0] = 1.0
    limits.check("192.0.2.1", "demo", "carol")  # one write a second again
    limits.check("192.0.2.3", "other-site", "alice")  # subjects are per site


def test_zero_turns_a_limit_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, client_writes_per_minute=0, subject_writes_per_minute=0)
    limits = WriteLimits(settings)
    for _ in range(10_000):
        limits.check("192.0.2.1", "demo", "alice")


@pytest.fixture
def flood_settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        client_writes_per_minute=1,
        client_write_burst=5,
        subject_writes_per_minute=1,
        subject_write_burst=3,
        outbox_max_records=50,
    )


@pytest.fixture
def client(flood_settings: Settings) -> Iterator[TestClient]:
    # The peer is the trusted loopback proxy; X-Forwarded-For names each visitor.
    app = create_app(flood_settings)
    with TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 5)) as c:
        yield c


def _post(client: TestClient, subject: str, ip: str) -> tuple[int, dict[str, str], dict[str, str]]:
    bundle = client.app.state.gateway.catalog.get("demo")  # type: ignore[attr-defined]
    response = client.post(
        URL,
        json=consent_body(bundle, subject),
        headers={"Origin": ORIGIN, "X-Forwarded-For": ip},
    )
    return response.status_code, dict(response.headers), response.json()


def test_one_client_flooding_writes_gets_429_and_others_are_served(client: TestClient) -> None:
    statuses = [_post(client, f"flood-{i}", "203.0.113.66")[0] for i in range(60)]
    assert statuses[:5] == [201] * 5 and set(statuses[5:]) == {429}
    status, headers, body = _post(client, "flood-x", "203.0.113.66")
    assert status == 429
    assert body == {
        "error": "rate_limited",
        "detail": "too many writes from this address; slow down",
    }
    assert int(headers["retry-after"]) >= 1 and headers["content-type"] == "application/json"
    # The flood never reached the outbox, so other visitors still get their 201.
    depth = client.app.state.recording.outbox.depth  # type: ignore[attr-defined]
    assert depth <= 5
    assert [_post(client, f"visitor-{i}", f"198.51.100.{i}")[0] for i in range(20)] == [201] * 20


def test_one_subject_written_from_many_addresses_gets_429(client: TestClient) -> None:
    statuses = [_post(client, "alice@example.com", f"198.51.100.{i}")[0] for i in range(6)]
    assert statuses == [201, 201, 201, 429, 429, 429]
    assert _post(client, "bob@example.com", "198.51.100.200")[0] == 201


def test_ipv6_addresses_of_one_64_share_a_bucket(client: TestClient) -> None:
    statuses = [_post(client, f"v6-{i}", f"2001:db8:5:6::{i + 1:x}")[0] for i in range(7)]
    assert statuses == [201] * 5 + [429] * 2
    assert _post(client, "v6-other", "2001:db8:5:7::1")[0] == 201


def test_bucket_table_stays_within_its_bound_under_ten_times_as_many_subjects() -> None:
    """Memory threat (issue 15): every consent of a new subject adds a key an outsider
    chooses; the table never holds more than max_keys, in arrays sized at its first write."""
    buckets = TokenBuckets(rate=0.2, burst=6, max_keys=20_000)
    assert sys.getsizeof(buckets._due) + sys.getsizeof(buckets._hash) < 1000  # until used
    assert buckets.take("first", 0.0) == 0.0

    def allocated() -> int:  # the process's own arrays (no shared table was given)
        assert isinstance(buckets._due, array) and isinstance(buckets._hash, array)
        return buckets._due.buffer_info()[1] + buckets._hash.buffer_info()[1]

    size = allocated()
    for i in range(200_000):
        assert buckets.take(hash(("demo", f"subject-{i}")), i / 1000) == 0.0
    assert len(buckets) == 20_000
    assert allocated() == size
    assert sys.getsizeof(buckets._due) + sys.getsizeof(buckets._hash) < 20_000 * 17


def test_a_flood_of_new_keys_displaces_refilled_buckets_before_a_drained_one() -> None:
    """Laundering threat: a client that drained its bucket cannot get a fresh one by making
    others write as new keys; the displaced buckets are the ones nearest to full."""
    buckets = TokenBuckets(rate=1.0, burst=3, max_keys=2)  # one set of two places
    for _ in range(3):
        assert buckets.take("drained", 0.0) == 0.0
    assert buckets.take("drained", 0.0) > 0
    for i in range(100):
        assert buckets.take(f"new-{i}", 0.0) == 0.0
    assert buckets.take("drained", 0.0) > 0  # still owes its writes
    assert len(buckets) == 2
