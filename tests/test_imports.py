"""The layering, read from the source with ``ast`` (no import runs): backends are leaves;
judges and reports read records only; methods reach the runner only through the registry
(they are handed a ``RunContext``); leaf contract modules import nothing of somabench.

Every ``import`` counts, also inside functions; ``if TYPE_CHECKING:`` blocks do not (type
names only), nor do ``__main__.py`` entry points (they hand over to ``somabench.commands``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "somabench"
# package -> its directory (judges/ and baselines/ live at the top level, see pyproject.toml)
PACKAGES = {"somabench.backends": SRC / "backends", "somabench.judges": ROOT / "judges",
            "somabench.report": SRC / "report", "somabench.baselines": ROOT / "baselines",
            "somabench.soma": SRC / "soma"}
ORCHESTRATION = ("somabench.runner", "somabench.task", "somabench.sweep", "somabench.commands",
                 "somabench.plan")
METHODS = ("somabench.methods", "somabench.soma", "somabench.baselines")
RULES: dict[str, tuple[str, ...]] = {
    # a backend serves a model; it knows nothing of who calls it
    "somabench.backends": (*ORCHESTRATION, *METHODS, "somabench.judges", "somabench.report",
                           "somabench.data", "somabench.reference"),
    # judges and reports read records (and may call models / read datasets), never the serving
    "somabench.judges": (*ORCHESTRATION, *METHODS),
    "somabench.report": (*ORCHESTRATION, *METHODS, "somabench.judges.panel"),
    # methods get their RunContext from the runner; they never import it
    "somabench.baselines": ORCHESTRATION,
    "somabench.soma": ORCHESTRATION,
}
LEAVES = {"rundir.py": ("somabench.errors",), "errors.py": (), "locks.py": ()}
"""Contract modules every layer may import, with their allowed imports (``rundir`` raises the
typed errors)."""


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (outside TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _hits(found: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in found for f in forbidden if m == f or m.startswith(f + "."))


@pytest.mark.parametrize("package", sorted(RULES))
def test_layering(package: str) -> None:
    problems = []
    for path in sorted(PACKAGES[package].rglob("*.py")):
        if path.name == "__main__.py":
            continue
        bad = _hits(imported_modules(path), RULES[package])
        if bad:
            problems.append(f"{path.relative_to(ROOT)} imports {', '.join(bad)}")
    assert not problems, f"{package} breaks the layering:\n" + "\n".join(problems)


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_contract_modules_are_leaves(leaf: str) -> None:
    found = {m for m in imported_modules(SRC / leaf) if m.startswith("somabench")}
    allowed = {m for m in found if LEAVES[leaf] and m.startswith(LEAVES[leaf])}
    assert found == allowed, sorted(found - allowed)


def test_the_checker_sees_function_level_imports_and_skips_type_checking(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from somabench.runner import RunContext\n"
                      "def f():\n    from somabench.task import run_task\n    import somabench.commands\n")
    found = imported_modules(sample)
    assert "somabench.task" in found and "somabench.commands" in found
    assert "somabench.runner" not in found
    assert _hits(found, ORCHESTRATION) == ["somabench.commands", "somabench.task",
                                           "somabench.task.run_task"]
