"""Import every gateway module in this process and report any work done at import.

Run as ``python -m tests.import_audit [extra.module ...]``; prints a JSON list of findings
(empty when importing is free of I/O). Every module gateway/ imports from elsewhere (the
standard library, dependencies) is imported first, so that what is left, once an audit hook
(PEP 578) is on, is the gateway modules' own top-level code: a file read, a directory listed,
a socket, a process or a thread started there is reported with the line that did it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

# Audit events that mean I/O, processes or waiting (see the audit events table in the
# Python docs); `open` is also what reading a data file next to a module raises.
WATCHED = (
    "open",
    "os.",
    "socket.",
    "subprocess.",
    "sqlite3.",
    "shutil.",
    "glob.",
    "ctypes.",
    "urllib.",
    "http.",
    "mmap.",
    "tempfile.",
    "fcntl.",
    "time.sleep",  # Python 3.12 and later
)


def module_names(package_dir: Path, package: str) -> list[str]:
    """Every module of a package folder, by dotted name, without importing any of them."""
    names = []
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def imported_elsewhere(files: list[Path], own: str) -> list[str]:
    """Every module these files import (at any depth) from outside the package ``own``."""
    found: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return sorted(name for name in found if name.partition(".")[0] != own)


def _culprit(frame: FrameType | None, sources: set[str]) -> str | None:
    """file:line of the nearest audited module frame, or None if the import system did it."""
    innermost = frame
    if frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
        return None  # the loader reading a module's own code
    while frame is not None:
        if frame.f_code.co_filename in sources:
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return f"{innermost.f_code.co_filename}:{innermost.f_lineno}" if innermost else "?"


def audit(extra: list[str]) -> list[dict[str, Any]]:
    spec = importlib.util.find_spec("gateway")
    assert spec is not None and spec.submodule_search_locations
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(package_dir.rglob("*.py"))
    sources = {str(p) for p in files}
    for name in extra:
        extra_spec = importlib.util.find_spec(name)
        assert extra_spec is not None and extra_spec.origin, name
        files.append(Path(extra_spec.origin))
        sources.add(extra_spec.origin)
    for name in imported_elsewhere(files, "gateway"):
        if name not in extra:
            importlib.import_module(name)
    to_import = [*module_names(package_dir, "gateway"), *extra]
    threads_before = set(threading.enumerate())
    findings: list[dict[str, Any]] = []
    busy = threading.local()

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if not event.startswith(WATCHED) or getattr(busy, "on", False):
            return
        busy.on = True  # sys._getframe raises an audit event of its own
        try:
            where = _culprit(sys._getframe(1), sources)
        finally:
            busy.on = False
        if where is not None:
            findings.append({"event": event, "args": repr(args)[:200], "where": where})

    sys.addaudithook(hook)
    for name in to_import:
        importlib.import_module(name)
    for thread in set(threading.enumerate()) - threads_before:
        findings.append({"event": "thread", "args": thread.name, "where": "?"})
    return findings


if __name__ == "__main__":
    report = audit(sys.argv[1:])
    print(json.dumps(report, indent=1))
