"""The mini-program SDK, run by node (`node --test tests/js/miniprogram.test.mjs`) with a
stand-in `wx` object against a real `consent-gateway serve` started here."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli.keys import create as create_key
from tests.browser.harness import Gateway, run_gateway
from tests.helpers import ROOT, make_settings

SDK = ROOT / "static" / "miniprogram" / "consent-gateway.js"
TESTS = ROOT / "tests" / "js" / "miniprogram.test.mjs"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    work = tmp_path_factory.mktemp("miniprogram")
    # Mini-programs send no Origin: the allowed origins play no part.
    with run_gateway("http://127.0.0.1:9", work) as gateway:
        settings = make_settings(work, banners_dir=work / "banners", data_dir=work / "data")
        lines = asyncio.run(create_key(settings, "demo", "miniprogram-backend", []))
        yield gateway, lines[-1]


def node() -> str:
    found = shutil.which("node")
    assert found, "node is installed by scripts/bootstrap.sh test"
    return found


def test_the_sdk_parses_as_plain_javascript() -> None:
    done = subprocess.run(
        [node(), "--check", str(SDK)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    text = re.sub(r"/\*.*?\*/|^\s*//.*$", "", SDK.read_text(encoding="utf-8"), flags=re.S | re.M)
    # No async/await or other syntax a mini-program base library without a transpiler refuses.
    assert "async " not in text and "await " not in text and "=>" not in text


def test_the_sdk_against_a_real_gateway(served: tuple[Gateway, str], tmp_path: Path) -> None:
    gateway, key = served
    done = subprocess.run(
        [node(), "--test", "--test-reporter=tap", str(TESTS)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=ROOT,
        env={**os.environ, "GATEWAY_URL": gateway.origin, "API_KEY": key},
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    for line in ("# tests 7", "# pass 7", "# skipped 0"):
        assert line in done.stdout, done.stdout[-3000:]
