"""The command line: check passes on what we ship, get works in-process, errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.core.errors import ConfigError
from tests.helpers import GEOIP_DIR, ROOT


def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GATEWAY_BANNERS_DIR", str(ROOT / "banners"))
    monkeypatch.setenv("GATEWAY_LOCALES_DIR", str(ROOT / "locales"))
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GATEWAY_RELOAD", "false")


def test_check_passes_for_every_shipped_site(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _env(monkeypatch, tmp_path)
    assert main(["check"]) == 0
    assert "demo" in capsys.readouterr().out


def test_check_fails_with_file_and_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _env(monkeypatch, tmp_path)
    bad = tmp_path / "banners" / "broken"
    bad.mkdir(parents=True)
    (bad / "site.toml").write_text('default_locale = "en"\npurposes = []\ncolour = 1\n')
    monkeypatch.setenv("GATEWAY_BANNERS_DIR", str(tmp_path / "banners"))
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert "site.toml: colour" in out


def test_get_requests_in_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _env(monkeypatch, tmp_path)
    assert main(["get", "/v1/sites/demo/config?region=FR&lang=fr"]) == 0
    assert '"language":"fr"' in capsys.readouterr().out
    assert main(["get", "/v1/sites/nope/config"]) == 1


def test_bad_setting_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _env(monkeypatch, tmp_path)
    monkeypatch.setenv(
        "GATEWAY_GEOIP_DB",
        str(GEOIP_DIR / "GeoIP2-City-Test-Invalid-Node-Count.mmdb"),
    )
    assert main(["get", "/healthz"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("consent-gateway: error:") and "Invalid-Node-Count" in err
    assert "Traceback" not in err


def test_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "GATEWAY_TRUSTED_PROXIES" in out and "--geoip-db" in out


def test_command_settings_are_what_the_command_runs_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench.inprocess builds the app itself with these: a flag wins over GATEWAY_*, which
    wins over the default, as for `consent-gateway serve`; an unknown variable is refused."""
    from gateway.cli.main import command_settings

    monkeypatch.setenv("GATEWAY_ACCESS_LOG", "all")
    monkeypatch.setenv("GATEWAY_WORKERS", "3")
    settings = command_settings(["serve", "--access-log", "off"])
    assert (settings.access_log, settings.workers) == ("off", 3)
    monkeypatch.setenv("GATEWAY_NO_SUCH_SETTING", "1")
    with pytest.raises(ConfigError):
        command_settings(["serve"])
