"""Credentials in logs: the access log keeps serving parameters and drops every other value."""

from __future__ import annotations

import logging
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.web.accesslog import LOGGER, AccessLog, RedactQuery, redact_target
from tests.helpers import make_settings

RECEIPT = "v1.eyJ1IjoiYWxpY2UifQ.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/healthz", "/healthz"),
        (
            f"/v1/sites/demo/subjects/a/consents?receipt={RECEIPT}",
            "/v1/sites/demo/subjects/a/consents?receipt=…",
        ),
        (
            "/v1/sites/demo/config?lang=de&region=US-CA",
            "/v1/sites/demo/config?lang=de&region=US-CA",
        ),
        (
            "/admin/preview?site=demo&token=s3cret&lang=fr",
            "/admin/preview?site=demo&token=…&lang=fr",
        ),
        (
            "/x?" + "&".join(f"k{i}=v" for i in range(12)),
            "/x?" + "&".join(f"k{i}=…" for i in range(8)) + "&…4 more",
        ),
        ("/x?lang=" + "d" * 5000, "/x?lang=" + "d" * 32),
    ],
)
def test_query_values_other_than_serving_parameters_are_redacted(target: str, logged: str) -> None:
    assert redact_target(target) == logged


def test_filter_rewrites_uvicorn_access_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/a?receipt={RECEIPT}", "1.1", 403), None,
    )  # fmt: skip
    assert RedactQuery().filter(record)
    assert RECEIPT not in record.getMessage()
    assert record.getMessage() == '127.0.0.1:5 - "GET /a?receipt=… HTTP/1.1" 403'


# ---- GATEWAY_ACCESS_LOG: the gateway's own JSON lines ------------------------------------

CLIENT_IP = "198.51.100.77"


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    """The access lines the app writes, parsed (the logger's JSON messages)."""
    found: list[dict[str, Any]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(orjson.loads(record.getMessage()))

    logger = logging.getLogger(LOGGER)
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield found
    finally:
        logger.removeHandler(handler)


def _client(tmp_path: Path, mode: str, sample: float = 0.01) -> TestClient:
    settings = make_settings(tmp_path, access_log=mode, access_log_sample=sample)
    return TestClient(create_app(settings), client=(CLIENT_IP, 40000))


def _traffic(client: TestClient) -> None:
    client.get("/v1/sites/demo/config?region=DE&lang=de", headers={"CF-IPCountry": "FR"})
    client.get(f"/v1/sites/demo/subjects/{'a' * 32}/consents?receipt={RECEIPT}")  # 403
    client.get("/v1/sites/nope/consent.js", headers={"X-Request-ID": "edge-42"})  # 404


def test_off_writes_nothing_and_adds_no_middleware(tmp_path: Path, lines: list[Any]) -> None:
    with _client(tmp_path, "off") as client:
        _traffic(client)
        assert not isinstance(client.app.middleware_stack, AccessLog)  # type: ignore[attr-defined]
    assert lines == []


def test_errors_logs_only_4xx_and_5xx_with_every_field(tmp_path: Path, lines: list[Any]) -> None:
    with _client(tmp_path, "errors") as client:
        _traffic(client)
        missing = client.get("/v1/sites/nope/consent.js", headers={"X-Request-ID": "edge-43"})
    assert [line["status"] for line in lines] == [403, 404, 404]
    denied, unknown = lines[0], lines[1]
    assert set(denied) == {
        "time", "request_id", "method", "path", "query", "status", "duration_ms", "bytes",
        "site", "region",
    }  # fmt: skip
    assert denied["method"] == "GET"
    assert denied["path"] == f"/v1/sites/demo/subjects/{'a' * 32}/consents"
    assert denied["query"] == "receipt=…"  # the value never reaches the log
    assert denied["site"] == "demo"
    assert denied["bytes"] > 0
    assert denied["duration_ms"] >= 0
    assert denied["time"].endswith("+00:00")
    assert re.fullmatch(r"[0-9a-f]{16}", denied["request_id"])
    assert unknown["request_id"] == "edge-42"  # the edge's id is kept
    assert missing.headers["x-request-id"] == "edge-43"  # and the answer names it
    text = orjson.dumps(lines).decode()
    assert CLIENT_IP not in text
    assert RECEIPT not in text


def test_hot_routes_log_themselves_and_refusals_are_logged(
    tmp_path: Path, lines: list[Any]
) -> None:
    """The hot routes are not wrapped (a served banner pays one comparison), yet nothing an
    operator needs goes unlogged: the hot route's own errors, the front's 414/431 and the
    framing's 400 each get their line and their X-Request-ID, and an unlogged answer carries
    no request id."""
    with _client(tmp_path, "errors") as client:
        stack = client.app.middleware_stack  # type: ignore[attr-defined]
        assert not isinstance(stack, AccessLog)
        assert isinstance(client.app.front.app, AccessLog)  # type: ignore[attr-defined]
        served = client.get("/v1/sites/demo/config?region=DE")
        long = client.get("/v1/sites/demo/config?q=" + "x" * 9000)
        coded = client.post(
            "/v1/sites/demo/consents",
            content=b"{}",
            headers={"Transfer-Encoding": "gzip, chunked", "Content-Type": "application/json"},
        )
        head = client.head("/v1/sites/nope/config")
    assert served.status_code == 200 and "x-request-id" not in served.headers
    assert [line["status"] for line in lines] == [414, 400, 404]
    assert [r.headers["x-request-id"] for r in (long, coded, head)] == [
        line["request_id"] for line in lines
    ]
    assert lines[0]["query"] == "q=…"  # the over-long value is not logged either
    assert lines[2]["method"] == "HEAD" and lines[2]["bytes"] == 0


def test_region_is_the_visitors_not_their_address(tmp_path: Path, lines: list[Any]) -> None:
    with _client(tmp_path, "all") as client:
        # The test client's peer is not a trusted proxy: the geo database decides (none here).
        client.get("/v1/sites/demo/config")
    settings = make_settings(tmp_path, access_log="all")
    with TestClient(create_app(settings), client=("127.0.0.1", 40000)) as client:
        client.get("/v1/sites/demo/config", headers={"CF-IPCountry": "FR"})
    assert [line["region"] for line in lines] == [None, "FR"]
    assert lines[1]["query"] is None


def test_all_logs_every_request_and_its_bytes(tmp_path: Path, lines: list[Any]) -> None:
    with _client(tmp_path, "all") as client:
        _traffic(client)
        ok = client.get("/v1/sites/demo/banner?region=DE", headers={"Accept-Encoding": "gzip"})
    assert [line["status"] for line in lines] == [200, 403, 404, 200]
    assert lines[0]["query"] == "region=DE&lang=de"
    assert lines[-1]["bytes"] == int(ok.headers["content-length"])
    assert ok.headers["x-request-id"] == lines[-1]["request_id"]


def test_sampled_logs_errors_and_a_share_of_the_rest(tmp_path: Path, lines: list[Any]) -> None:
    with _client(tmp_path, "sampled", sample=0.0) as client:
        _traffic(client)
    assert [line["status"] for line in lines] == [403, 404]
    lines.clear()
    with _client(tmp_path, "sampled", sample=1.0) as client:
        _traffic(client)
    assert [line["status"] for line in lines] == [200, 403, 404]
    lines.clear()
    random.seed(7)
    with _client(tmp_path, "sampled", sample=0.25) as client:
        for _ in range(400):
            client.get("/healthz")
    assert 50 <= len(lines) <= 150


async def test_a_failing_app_is_logged_as_500() -> None:
    written: list[str] = []

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent")

    log = AccessLog(broken, "errors", write=written.append)
    with pytest.raises(RuntimeError):
        await log({"type": "http", "method": "GET", "path": "/x", "headers": []}, receive, send)
    assert orjson.loads(written[0])["status"] == 500


def test_serve_turns_uvicorns_access_log_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uvicorn

    from gateway.cli import main

    seen: dict[str, Any] = {}

    class Server:
        started = True

        def __init__(self, config: Any) -> None:
            pass

        def run(self, sockets: Any = None) -> None:
            pass

    monkeypatch.setattr(uvicorn, "Config", lambda app, **kw: seen.update(kw))
    monkeypatch.setattr(uvicorn, "Server", Server)
    code = main.main(
        ["serve", "--data-dir", str(tmp_path), "--banners-dir", "banners", "--reload", "false",
         "--workers", "1"]
    )  # fmt: skip
    assert code == 0
    assert seen["access_log"] is False
    assert seen["loop"] == "uvloop"
    handlers = logging.getLogger(LOGGER).handlers
    assert any(getattr(h, "stream", None) is sys.stdout for h in handlers)
