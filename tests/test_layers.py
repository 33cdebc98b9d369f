"""The package layers hold: no module imports from a layer above its own, and no circles.

Every import counts, function-local ones too (a local import hides a circle, it does not
remove it). The layer list is the README's module table in code; a new package must be placed
here before it can import anything.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "gateway"

# Bottom to top. A module may import its own package, or any package on a lower layer.
LAYERS: list[set[str]] = [
    {"core"},  # pure: settings, errors, model, rules, language negotiation
    {"signals", "standards"},  # pure encoders/decoders of consent signals
    {"geo", "sinks"},  # adapters: locating visitors, the central stores
    {"sites"},  # site data: site files, catalogs, translations, versions
    {"serving", "recording", "preferences", "rights", "audit"},  # services
    {"web"},  # thin HTTP handlers
    {"app"},  # the app factory
    {"cli"},  # the command line, which starts the app
]
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> Iterator[tuple[str, int]]:
    """(gateway module, line) for every import of a gateway module in the file."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "gateway":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".")
                if not is_package:
                    package.pop()
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            if base.split(".")[0] != "gateway":
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                # `from gateway.core import errors` imports a module; `from x import Y` a name.
                yield (target if target in known else base), node.lineno


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {
        name: {target for target, _ in imported(path, name, known) if target != name}
        for name, path in found.items()
    }


def test_every_package_has_a_layer() -> None:
    packages = {package_of(m) for m in modules()} - {None}
    assert packages <= set(LAYER_OF), f"place these in LAYERS: {packages - set(LAYER_OF)}"


def test_no_import_runs_up_a_layer() -> None:
    found = modules()
    known = set(found)
    upward = []
    for name, path in found.items():
        own = package_of(name)
        if own is None:
            continue
        for target, line in imported(path, name, known):
            other = package_of(target)
            if other is None or other == own:
                continue
            if LAYER_OF[other] >= LAYER_OF[own]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not upward, "imports that run up or sideways across layers:\n" + "\n".join(upward)


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle in the module graph, as a path that starts and ends at the same module."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (circle := visit(start)):
            return circle
    return None


def test_no_import_circles() -> None:
    # A package's __init__ importing its own modules is not a circle of concepts.
    edges = {
        src: {dst for dst in targets if not src.startswith(dst + ".")}
        for src, targets in graph().items()
    }
    circle = find_circle(edges)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


@pytest.mark.parametrize(
    ("edges", "circular"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"a"}}, True),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"a"}}, True),
    ],
)
def test_find_circle_finds_what_it_must(edges: dict[str, set[str]], circular: bool) -> None:
    assert (find_circle(edges) is not None) is circular


def test_upward_import_is_caught(tmp_path: Path) -> None:
    """The checker itself: a core module importing web must be reported."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from gateway.web import admin\n")
    targets = [t for t, _ in imported(source, "gateway.core.probe", {"gateway.web.admin"})]
    assert targets == ["gateway.web.admin"]
