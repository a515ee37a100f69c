"""DESIGN §4: imports go one way, lower to higher, never back, and never in a circle.

Every module of the project is parsed (imports inside functions count too: a cycle
hidden in a function is still a cycle), and the import graph is checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tre", "access_control", "synthetic", "pseudonymisation", "federation")
# the pseudonymisation service sits on tokens and the audit log; nodes and the CLI use its client
LAYERS = (("tre.core", 1), ("access_control", 2), ("synthetic", 3), ("pseudonymisation", 4),
          ("federation", 5), ("tre", 6))


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports, each resolved to the module that holds it."""

    def holder(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import module` imports the module, `from module import name` its holder
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out |= {h for t in targets if (h := holder(t)) and h != name}
    return out


def layer(module: str) -> int:
    return next(rank for prefix, rank in LAYERS
                if module == prefix or module.startswith(prefix + "."))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_no_module_imports_a_higher_layer(graph):
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                    if layer(t) > layer(m))
    assert not upward, upward


def test_the_portal_does_not_import_the_node(graph):
    reach = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                   if m.startswith("tre.portal") and t.startswith("federation.node"))
    assert not reach, reach


def in_contract(module: str) -> bool:
    return module == "federation.launch" or module.startswith("federation.launch.")


def test_the_portal_reaches_the_federation_only_through_the_run_contract(graph):
    """`federation.launch` is the federation's one face to the portal: node internals,
    the apps and torch-side training stay out of the portal process."""
    reach = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                   if m.startswith("tre.portal") and t.startswith("federation")
                   and not in_contract(t))
    assert not reach, reach


def test_the_run_contract_imports_no_other_part_of_the_federation(graph):
    reach = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                   if in_contract(m) and t.startswith("federation.") and not in_contract(t))
    assert not reach, reach


def test_there_is_no_import_cycle(graph):
    """Tarjan's strongly connected components: any with two or more modules is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_walk_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "a.py"
    probe.write_text("def f():\n    from b import thing\n")
    assert imports("a", probe, {"a": probe, "b": tmp_path / "b.py"}) == {"b"}
