"""The benchmarks start the gateway as README tells users, on a data dir as `make run` leaves it.

Threat: a benchmark figure from a configuration users never run. `make run` builds the
embedded geo database into the data dir before `consent-gateway serve`, and the gateway then
looks every visitor's address up in it; a bench on a bare data dir measured a gateway without.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import geoip2.database
import pytest

from bench import harness
from gateway.core.settings import Settings
from tests.helpers import unavailable

ROOT = Path(__file__).resolve().parent.parent


def test_the_gateway_command_is_the_readmes() -> None:
    recipe = (ROOT / "Makefile").read_text()
    run = recipe.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "consent-gateway geo build --if-missing" in run
    assert re.search(r"consent-gateway serve --host \S+ --port \S+", run)
    command = harness.gateway_command(8123)
    assert command == [harness.CONSENT_GATEWAY, "serve", "--host", "127.0.0.1", "--port", "8123"]
    assert Path(command[0]).name == "consent-gateway"


def test_a_bench_data_dir_holds_the_geo_database_make_run_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not Path("/usr/share/tor/geoip").exists():
        unavailable("tor-geoipdb is not installed (scripts/bootstrap.sh installs it)")
    monkeypatch.setattr(harness, "_GEO_BUILT", tmp_path / "cache" / "country.mmdb")
    data = Path(harness.as_make_run(tmp_path / "data"))
    # Where `geo build --if-missing` writes and the gateway looks (Settings.geoip_path).
    assert Settings(data_dir=data).geoip_path == data / "geo" / "country.mmdb"
    with geoip2.database.Reader(str(data / "geo" / "country.mmdb")) as reader:
        assert reader.country("8.8.8.8").country.iso_code == "US"
    # Built once: the next data dir gets a copy, without building again.
    start = time.monotonic()
    other = Path(harness.as_make_run(tmp_path / "other"))
    assert time.monotonic() - start < 2
    assert (other / "geo" / "country.mmdb").read_bytes() == (
        data / "geo" / "country.mmdb"
    ).read_bytes()


def test_in_process_requests_in_flight_share_the_loop_and_all_run() -> None:
    """`bench.inprocess --in-flight 64` holds 64 requests at once, as wrk's connections do, so
    POSTs share group commits; every request still runs once and its status is checked (a
    figure from requests that failed fast would flatter the gateway)."""
    import asyncio

    from bench import inprocess

    seen: list[int] = []
    now = 0
    most = 0

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        nonlocal now, most
        now += 1
        most = max(most, now)
        await asyncio.sleep(0)
        seen.append(int(str(scope["path"]).rsplit("/", 1)[1]))
        now -= 1
        await send({"type": "http.response.start", "status": 201})  # type: ignore[operator]

    def make(i: int) -> tuple[dict[str, object], bytes, int]:
        return inprocess._scope(app, "POST", f"/r/{i}", []), b"", 201

    asyncio.run(inprocess._measure(app, 130, make, in_flight=64))
    assert sorted(seen) == list(range(130)) and most == 64
    seen.clear()
    most = 0
    asyncio.run(inprocess._measure(app, 10, make))
    assert seen == list(range(10)) and most == 1

    def failing(i: int) -> tuple[dict[str, object], bytes, int]:
        return inprocess._scope(app, "POST", f"/r/{i}", []), b"", 400

    with pytest.raises(AssertionError):
        asyncio.run(inprocess._measure(app, 70, failing, in_flight=64))


def test_the_protocol_bench_drives_serve_s_own_protocol_and_checks_every_answer() -> None:
    """`bench.protocol` times the gateway through the uvicorn configuration `serve` runs
    (its guarded protocol class included) and bare through plain httptools, every answer a
    200 with a body as long as the gateway's. Threat: a figure from a protocol users never
    run, or from requests answered with errors (cheaper than the banner)."""
    import uvloop

    from bench import protocol
    from gateway.cli.main import server_config
    from gateway.web.connections import GuardedHttpToolsProtocol

    before = dict(os.environ)
    config = protocol.gateway_config()
    config.load()
    assert issubclass(config.http_protocol_class, GuardedHttpToolsProtocol)
    assert server_config.__module__ == "gateway.cli.main"
    assert dict(os.environ) == before  # its settings go by argv: later tests see no change
    bare = protocol.bare_config(10, "application/json")
    assert (bare.loop, bare.http, bare.access_log) == ("uvloop", "httptools", False)
    assert harness.uvicorn_command("bench.bare:app", 9)[4:] == [
        "--host", "127.0.0.1", "--port", "9", "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip

    found = uvloop.run(protocol.run(protocol.CONNECTIONS * 2, 1, ("/v1/sites/demo/config",)))
    figures = found["/v1/sites/demo/config"]
    assert figures["bare"] > 0 and figures["gateway"] > 0
    assert figures["body_bytes"] > 1000  # the banner's config, not an error

    side = protocol.Side(protocol.bare_config(10, "application/json"))

    async def refused() -> None:
        side.connect()
        await side.measure(protocol.REQUEST % b"/missing", protocol.CONNECTIONS)

    with pytest.raises(RuntimeError, match="answers of 200"):
        uvloop.run(refused())


def test_in_process_refuses_fewer_than_one_request_in_flight(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--in-flight 0` (or less) would time no request at all: refused before any app is
    built, with the flag named."""
    from bench import inprocess

    monkeypatch.setattr("sys.argv", ["bench.inprocess", "--in-flight", "0"])
    with pytest.raises(SystemExit) as exited:
        inprocess.main()
    assert exited.value.code == 2
    assert "--in-flight must be at least 1" in capsys.readouterr().err


def test_benches_change_only_the_settings_they_give_a_reason_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The measured server keeps every default users get but those BENCH_SETTINGS explains:
    a variable of the developer's shell does not reach it, a setting without a reason (live
    reload off, a quieter log level: both ran under the benches once) is refused, and no
    bench names one outside the table."""
    monkeypatch.setenv("GATEWAY_RELOAD", "false")
    monkeypatch.setenv("GATEWAY_ACCESS_LOG", "all")
    env = harness.gateway_env({"GATEWAY_DATA_DIR": "/tmp/x"})
    assert env["GATEWAY_DATA_DIR"] == "/tmp/x"
    assert "GATEWAY_RELOAD" not in env and "GATEWAY_ACCESS_LOG" not in env
    assert env["PATH"] == os.environ["PATH"]
    for unlisted in ("GATEWAY_RELOAD", "GATEWAY_LOG_LEVEL"):
        with pytest.raises(ValueError, match=unlisted):
            harness.gateway_env({unlisted: "false"})
    named = {
        name
        for path in (ROOT / "bench").glob("*.py")
        for name in re.findall(r"[\"'](GATEWAY_[A-Z_]+)[\"']", path.read_text())
    }
    assert named and named <= set(harness.BENCH_SETTINGS), named - set(harness.BENCH_SETTINGS)
    # Every bench starts the gateway through gateway_command, none with its own spelling.
    for path in (ROOT / "bench").glob("*.py"):
        if path.name != "harness.py":
            assert '"serve", "--host"' not in path.read_text(), path.name


def test_in_process_settings_are_serve_s_defaults() -> None:
    """bench.inprocess and bench.protocol build the app from the settings `serve` parses with
    no option but the demo's files, a scratch data dir and the log mode: live reload on."""
    from dataclasses import fields

    from bench import inprocess
    from gateway.cli.main import command_settings

    ours = inprocess.serve_settings("errors")
    shipped = command_settings(["serve"])
    differ = {f.name for f in fields(Settings) if getattr(ours, f.name) != getattr(shipped, f.name)}
    assert differ <= {"data_dir", "banners_dir", "locales_dir"}, differ
    assert ours.reload is True
