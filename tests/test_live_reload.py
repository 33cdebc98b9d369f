"""Live reload: valid edits are picked up without a restart; broken ones keep the last good one."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.core.settings import Settings
from gateway.sites.catalog import LiveCatalog
from tests.helpers import OPS, editable_settings, shipped, shipped_rules

TOKEN = "admin-token-for-tests-0123456789"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return editable_settings(tmp_path, reload=True, admin_token=TOKEN)


def _site_toml(s: Settings) -> Path:
    return s.banners_dir / "demo" / "site.toml"


def _de_po(s: Settings) -> Path:
    return s.locales_dir / "de" / "LC_MESSAGES" / "demo.po"


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


BROKEN: list[tuple[str, Callable[[Settings], Path], str, str]] = [
    # (what, file it breaks, text appended, where the error points)
    ("toml syntax", _site_toml, "\nname = \n", "site.toml"),
    ("unknown key", _site_toml, '\ncolour = "red"\n', "colour: unknown key"),
    ("unknown rule", _site_toml, '\n[rules."DE"]\nrule = "gdrp"\n', "site.toml: rules"),
    ("po syntax", _de_po, "\nmsgid broken\n", "de/LC_MESSAGES/demo.po"),
]


@pytest.mark.parametrize(("what", "target", "text", "where"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_edit_is_refused_and_the_last_good_state_serves(
    settings: Settings,
    what: str,
    target: Callable[[Settings], Path],
    text: str,
    where: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    catalog = LiveCatalog(settings.banners_dir, settings.locales_dir, shipped_rules())
    catalog.load()
    good = catalog.get("demo")
    path = target(settings)
    original = path.read_bytes()
    _append(path, text)
    assert catalog.reload() is False
    assert catalog.get("demo") is good
    assert catalog.last_error is not None
    assert where in catalog.last_error
    logged = [r for r in caplog.records if r.name == "gateway.catalog" and r.levelname == "ERROR"]
    assert len(logged) == 1
    assert where in logged[0].getMessage()
    path.write_bytes(original)
    assert catalog.reload() is True
    assert catalog.last_error is None
    fixed = catalog.get("demo")
    assert fixed is not None
    assert good is not None
    assert fixed.banner_version == good.banner_version


def _wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll until check() is truthy; the watcher polls the tree once a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the watcher")


def test_watcher_picks_up_edits_without_a_restart(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:

        def config() -> dict[str, Any]:
            body: dict[str, Any] = client.get("/v1/sites/demo/config?region=DE&lang=de").json()
            return body

        first = config()
        toml = _site_toml(settings)
        toml.write_text(
            toml.read_text(encoding="utf-8").replace(
                'name = "Analytics"', 'name = "Audience measurement"'
            ),
            encoding="utf-8",
        )
        second = _wait_for(
            lambda: (c := config())["banner_version"] != first["banner_version"] and c
        )
        assert second["consent_revision"] == first["consent_revision"]
        names = {p["id"]: p["name"] for p in second["purposes"]}
        assert names["analytics"] == "Audience measurement"  # not in de.po yet: falls back
        # The reload published the new version for records to resolve against.
        versions = client.get(
            "/admin/v1/sites/demo/versions", headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()["versions"]
        assert {v["banner_version"] for v in versions} == {
            first["banner_version"],
            second["banner_version"],
        }

        _append(_de_po(settings), "\nmsgid broken\n")
        ready = _wait_for(
            lambda: (r := client.get("/readyz", headers=OPS)).status_code == 503 and r
        )
        assert "de/LC_MESSAGES/demo.po" in ready.json()["catalog_error"]
        assert config()["banner_version"] == second["banner_version"]
        assert config()["texts"]["title"] == shipped("de", "We value your privacy")

        po = _de_po(settings)
        po.write_text(
            po.read_text(encoding="utf-8").replace("\nmsgid broken\n", ""), encoding="utf-8"
        )
        _wait_for(lambda: client.get("/readyz").status_code == 200)
        assert config()["banner_version"] == second["banner_version"]
