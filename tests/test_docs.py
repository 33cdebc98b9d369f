"""The docs generator: `--check` names each stale file and writes nothing; a run rewrites them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.cli.docs import DOCUMENTS, main, render_readme, template_reference
from gateway.core.settings_table import SETTINGS
from gateway.serving.render import TEMPLATE_VARIABLES
from tests.helpers import ROOT


def _project(tmp_path: Path) -> Path:
    """A copy of the generated documents, to make stale without touching the checkout."""
    for name in DOCUMENTS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_check_names_each_stale_file_writes_nothing_and_a_run_fixes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _project(tmp_path)
    readme = root / "README.md"
    reference = root / "docs" / "templates.md"
    port = next(s for s in SETTINGS if s.name == "port")
    readme.write_text(render_readme(readme.read_text("utf-8")).replace(port.help, "Old help."))
    reference.write_text(template_reference().replace("| `gpc` |", "| `gpc_old` |"), "utf-8")
    stale = {path: path.read_text("utf-8") for path in (readme, reference)}

    assert main(["--check"], root=root) == 1
    err = capsys.readouterr().err
    assert "README.md is stale: run `python -m gateway.cli.docs`" in err
    assert "docs/templates.md is stale" in err
    assert {path: path.read_text("utf-8") for path in stale} == stale  # nothing written

    assert main([], root=root) == 0
    assert port.help in readme.read_text("utf-8")
    assert reference.read_text("utf-8") == template_reference()
    assert main(["--check"], root=root) == 0


def test_the_template_reference_lists_every_variable() -> None:
    text = template_reference()
    assert all(f"| `{name}` |" in text for name in TEMPLATE_VARIABLES)
    assert "- `banner.html`: " in text and "- `preferences.html`: " in text
