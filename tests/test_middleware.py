"""Request metrics kept as plain numbers: counts per status, cumulative latency buckets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.web.middleware import RequestStats


def test_stats_export_counts_and_cumulative_buckets() -> None:
    stats = RequestStats()
    for seconds in (0.0004, 0.0005, 0.003, 2.0):
        stats.observe("serve_config", 200, seconds)
    stats.observe("serve_config", 304, 0.0001)
    registry = CollectorRegistry()
    registry.register(stats)
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    counts = {
        s.labels["status"]: s.value
        for s in families["gateway_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert counts == {"200": 4.0, "304": 1.0}
    buckets = {
        s.labels["le"]: s.value
        for s in families["gateway_http_request_duration_seconds"].samples
        if s.name.endswith("_bucket")
    }
    # 0.0005 is "less than or equal" to its bound, so it lands in the first bucket.
    assert buckets["0.0005"] == 3.0
    assert buckets["0.005"] == 4.0
    assert buckets["1.0"] == 4.0
    assert buckets["+Inf"] == 5.0
