"""Nothing runs at import: importing any gateway module reads no file, starts nothing.

Threat: work at import runs in every process that merely imports a module (the CLI's --help,
a test collecting, a worker forking), before settings exist, and fails there without the
context a start-up error has. The audit runs in a fresh interpreter (tests/import_audit.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import ROOT


def _audit(*extra: str, path: Path | None = None) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT, path) if p)}
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "tests.import_audit", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    findings: list[dict[str, Any]] = json.loads(done.stdout)
    return findings


def test_importing_every_gateway_module_does_no_io() -> None:
    assert _audit() == []


def test_the_audit_sees_a_module_that_works_at_import(tmp_path: Path) -> None:
    # The control: a module doing what a gateway module must not, caught line by line.
    (tmp_path / "busy_module.py").write_text(
        "import pathlib, socket, threading, time\n"
        "DATA = pathlib.Path(__file__).read_text()\n"
        "NAMES = list(pathlib.Path(__file__).parent.iterdir())\n"
        "socket.socket().close()\n"
        "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n",
        encoding="utf-8",
    )
    findings = _audit("busy_module", path=tmp_path)
    module = str(tmp_path / "busy_module.py")
    where = {(f["event"], f["where"]) for f in findings}
    assert ("open", f"{module}:2") in where
    assert ("os.listdir", f"{module}:3") in where
    assert ("socket.__new__", f"{module}:4") in where
    assert "thread" in {f["event"] for f in findings}


def test_the_serving_runtime_loads_no_command_module() -> None:
    # The app once imported `consent-gateway check` (and all it imports) to validate bundles.
    code = "import sys, gateway.app; print(sorted(m for m in sys.modules if 'gateway.cli' in m))"
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_the_serving_app_does_not_import_the_stream_client() -> None:
    """nats-py and aiohttp weigh ~10 MB of every worker's memory: they are imported only when
    GATEWAY_NATS_URL names a stream (gateway/sinks/__init__.nats_sink)."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, gateway.app; print('nats' in sys.modules, "
         "'aiohttp' in sys.modules)"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert done.stdout.split() == ["False", "False"]
