"""Information disclosure: /readyz and /metrics tell the public no paths and no error strings."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from gateway.app import create_app
from tests.helpers import OPS, editable_settings, make_settings


def test_public_readyz_says_only_ready_or_not(tmp_path: Path) -> None:
    settings = editable_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        for wrong in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": OPS["Authorization"] + "x"},
        ):
            assert client.get("/readyz", headers=wrong).json() == {"status": "ready"}
        detailed = client.get("/readyz", headers=OPS).json()
        assert "demo" in detailed["sites"] and "recording" in detailed
        # A refused reload: the public sees 503 "not ready", never the file or the error.
        po = settings.locales_dir / "de" / "LC_MESSAGES" / "demo.po"
        po.write_text(po.read_text(encoding="utf-8") + "\nmsgid broken\n", encoding="utf-8")
        client.app.state.gateway.catalog.reload()  # type: ignore[attr-defined]
        public = client.get("/readyz")
        assert public.status_code == 503 and public.json() == {"status": "not ready"}
        assert str(tmp_path) not in public.text
        assert "demo.po" in client.get("/readyz", headers=OPS).json()["catalog_error"]


def test_metrics_need_the_ops_token_when_one_is_set(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert client.get("/metrics", headers=OPS).status_code == 200


def test_open_metrics_hold_no_paths_or_errors(tmp_path: Path) -> None:
    """Without an ops token /metrics stays open for scrapers; it must hold only numbers."""
    settings = make_settings(tmp_path, ops_token="")
    with TestClient(create_app(settings)) as client:
        client.get("/v1/sites/demo/config")
        text = client.get("/metrics").text
        assert "gateway_http_requests_total" in text
        assert str(tmp_path) not in text and str(settings.banners_dir) not in text
        assert "Error" not in text and "Traceback" not in text
        # Without a token, nobody sees the details of /readyz either.
        assert client.get("/readyz", headers=OPS).json() == {"status": "ready"}
