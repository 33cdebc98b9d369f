"""IAB's reference JavaScript libraries (@iabtechlabtcf/core, @iabgpp/cmpapi) run with node.

``reference(requests)`` sends a batch to tests/js/iab_reference.mjs in one node process. The
libraries are npm devDependencies (``scripts/bootstrap.sh test`` runs ``npm ci``). Without node
or them a test skips, except under CI=true, where it fails: CI must run them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from tests.helpers import ROOT, unavailable

SCRIPT = ROOT / "tests" / "js" / "iab_reference.mjs"
LIBRARIES = [
    ROOT / "node_modules" / "@iabtechlabtcf" / "core",
    ROOT / "node_modules" / "@iabgpp" / "cmpapi",
]


def require_node() -> str:
    """The node binary, or skip (fail under CI) naming what is missing."""
    node = shutil.which("node")
    missing = [str(p) for p in LIBRARIES if not p.is_dir()]
    if node is None or missing:
        reason = "node is not installed" if node is None else f"npm ci first: no {missing}"
        unavailable(f"the IAB reference tests need node and the npm devDependencies: {reason}")
    return node


def reference(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each request's answer: ``{"ok": value}`` or ``{"error": message}``."""
    node = require_node()
    done = subprocess.run(
        [node, str(SCRIPT)],
        input=json.dumps(requests),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answers: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(answers) == len(requests)
    return answers


def ok(answer: dict[str, Any]) -> Any:
    assert "ok" in answer, answer.get("error")
    return answer["ok"]
