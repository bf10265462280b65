"""The import contracts in pyproject.toml ([tool.importlinter]) hold, and the import graph has
no cycle: the layers (commands -> orchestration -> methods, judges, report -> shared machinery
-> foundation) are checked by import-linter's ``lint-imports``; cycles and "the library never
imports the commands" are checked here on the same graph (grimp: every import that can run
counts, also inside functions; imports under ``TYPE_CHECKING`` never run and are left out, as
pyproject tells import-linter: they type the registries, whose entries live in the layers above
(``Registry[type[Method]]``), without an import at run time)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Set
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = "somabench.commands"
ENTRY = "somabench.__main__"


@pytest.fixture(scope="module")
def graph():  # noqa: ANN201 - grimp's ImportGraph
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the dev extra)")
    return grimp.build_graph("somabench", exclude_type_checking_imports=True)


def cycles(edges: Mapping[str, Set[str]]) -> list[list[str]]:
    """The import cycles of ``edges`` (module -> modules it imports): its strongly connected
    components with more than one module, or one module importing itself (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(sorted(component))
    return found


def test_import_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "lint-imports missing: pip install -e '.[dev]' (import-linter)"
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_the_import_graph_has_no_cycle(graph) -> None:  # noqa: ANN001
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert cycles(edges) == []


def test_the_library_never_imports_the_commands(graph) -> None:  # noqa: ANN001
    commands = {COMMANDS, *graph.find_descendants(COMMANDS)}
    importers = set()
    for module in commands:
        importers |= graph.find_modules_that_directly_import(module)
    assert sorted(importers - commands - {ENTRY}) == []
    assert graph.find_modules_directly_imported_by(ENTRY) <= commands  # __main__ only hands over


def test_the_cycle_finder_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"a"}}
    assert cycles(edges) == [["a", "b", "c"], ["e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
