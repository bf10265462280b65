"""The shared switching package sits below the methods that use it (issue 24): it imports no
method package (SOMA, the baselines), no orchestration, report or command module, so SOMA,
History-Prefix and History-FT can all import it without a cycle. Checked on the source (every
import, also inside functions), independent of the import contracts in pyproject.toml."""

from __future__ import annotations

import ast
from pathlib import Path

SWITCHING = Path(__file__).resolve().parents[2] / "src" / "somabench" / "switching"
ABOVE = ("somabench.soma", "somabench.baselines", "somabench.judges", "somabench.runner",
         "somabench.task", "somabench.sweep", "somabench.commands", "somabench.report",
         "somabench.plan", "somabench.bench", "somabench.serve", "somabench.tune")


def imported(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def upward(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == a or m.startswith(a + ".") for a in ABOVE)}


def test_switching_imports_nothing_above_it() -> None:
    files = sorted(SWITCHING.glob("*.py"))
    assert len(files) >= 8, f"switching package not found at {SWITCHING}"
    bad = {f.name: sorted(upward(imported(f))) for f in files if upward(imported(f))}
    assert not bad, f"somabench.switching imports a layer above it: {bad}"


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from somabench.soma.theory import knobs\n"
                     "import somabench.judgeX\nfrom somabench.switching import gate\n")
    assert upward(imported(probe)) == {"somabench.soma.theory"}
