"""Every repo path the docs and config comments cite exists, and the README's layout tree is true.

Why: docs rot silently. The README once cited a ``drift.py`` that did not exist and six
experiment files pointed at ``sweeps/*.md`` recipes that were never written. This test reads
text only (no imports of somabench), so it runs in well under a second.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFIXES = ("src", "conf", "docs", "baselines", "judges", "sweeps", "results", "tests", "notebooks")
# A cited path starts with a known top-level folder and is not the tail of a longer path or URL.
PATH_RE = re.compile(r"(?<![\w./-])((?:" + "|".join(PREFIXES) + r")/[\w./{},*<>=-]*)")
LINK_RE = re.compile(r"\]\(([^)\s]+)\)")
# A bare module name in a code span (`drift.py`) must name some module of the repo.
BARE_RE = re.compile(r"`(\w+\.py)\b")
CODE_DIRS = ("src", "baselines", "judges", "tests")
# Where a command writes (``--out results/x``): an output target, created by running it.
OUTPUT_ARG_RE = re.compile(r"--out(?:put)?[ =]\S+")
# Files a user creates (git-ignored), cited on purpose as "put your settings here".
USER_CREATED = {"conf/local/default.yaml"}


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _yaml_files() -> list[Path]:
    return sorted((ROOT / "conf").rglob("*.yaml"))


def _expand_braces(path: str) -> list[str]:
    """``a/{b,c}.py`` -> ``a/b.py``, ``a/c.py`` (one level is all the docs use)."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    head, tail = path[:match.start()], path[match.end():]
    return [p for alt in match.group(1).split(",") for p in _expand_braces(head + alt + tail)]


def _clean(token: str) -> str | None:
    """Strip a trailing ``:attr`` and punctuation; None for a placeholder (``<name>``, ``...``)."""
    token = token.split(":", 1)[0].rstrip(".,;")
    if "<" in token or ">" in token or "..." in token or "=" in token:
        return None
    return token


def _exists(rel: str) -> bool:
    if rel in USER_CREATED:
        return True
    if "*" in rel:
        return any(ROOT.glob(rel.rstrip("/")))
    return (ROOT / rel).exists()


def cited_paths(text: str) -> set[str]:
    """Repo-relative paths cited anywhere in ``text`` (prose, code spans, code blocks)."""
    out: set[str] = set()
    for raw in PATH_RE.findall(OUTPUT_ARG_RE.sub("", text)):
        cleaned = _clean(raw)
        if cleaned:
            out.update(_expand_braces(cleaned))
    return out


def yaml_comments(text: str) -> str:
    """The comment part of every line (``# ...``), where config files cite docs and recipes."""
    return "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)


def _cases() -> list[tuple[str, str]]:
    cases = []
    for path in _doc_files():
        text = path.read_text(encoding="utf-8")
        cases += [(path.relative_to(ROOT).as_posix(), p) for p in cited_paths(text)]
    for path in _yaml_files():
        text = yaml_comments(path.read_text(encoding="utf-8"))
        cases += [(path.relative_to(ROOT).as_posix(), p) for p in cited_paths(text)]
    return cases


def test_cited_paths_exist() -> None:
    missing = sorted(f"{src}: {p}" for src, p in _cases() if not _exists(p))
    assert not missing, "paths cited but missing:\n" + "\n".join(missing)


def test_markdown_links_resolve() -> None:
    missing = []
    for path in _doc_files():
        for target in LINK_RE.findall(path.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            if not (path.parent / target.split("#", 1)[0]).exists():
                missing.append(f"{path.relative_to(ROOT)}: {target}")
    assert not missing, "broken links:\n" + "\n".join(missing)


def test_bare_module_names_exist() -> None:
    modules = {p.name for d in CODE_DIRS for p in (ROOT / d).rglob("*.py")}
    missing = sorted(f"{path.relative_to(ROOT)}: {name}" for path in _doc_files()
                     for name in BARE_RE.findall(path.read_text(encoding="utf-8"))
                     if name not in modules)
    assert not missing, "modules cited but missing:\n" + "\n".join(missing)


def layout_entries(readme: str) -> list[str]:
    """Paths named by the ``## Layout`` tree (``├── name/   <- role``), built from indentation."""
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    stack: list[str] = []
    out = []
    for line in block.splitlines():
        match = re.match(r"^((?:│   |    )*)[├└]── (.*?)(?:\s+<-.*)?$", line)
        if not match:
            continue
        depth = len(match.group(1)) // 4
        names = match.group(2).split()
        stack = stack[:depth]
        for name in names:
            out.append("/".join([*stack, name]))
        stack.append(names[0].rstrip("/") if len(names) == 1 else "")
    return out


def test_layout_tree_matches_repo() -> None:
    entries = layout_entries((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(entries) > 20, "the README layout tree was not found or not parsed"
    missing = [e for e in entries if not _exists(e)]
    assert not missing, f"README layout names paths that do not exist: {missing}"


@pytest.mark.parametrize(("text", "expected"), [
    ("see `src/somabench/soma/switching.py`.", {"src/somabench/soma/switching.py"}),
    ("`baselines/llmlingua2.py:LegacyCacheLM`", {"baselines/llmlingua2.py"}),
    ("conf/method/<name>.yaml and results/<experiment>/", set()),
    ("https://x.org/tests/foo.py and somabench.baselines/x", set()),
    ("python -m somabench report outputs/x --out results/new_run", set()),
    ("`src/somabench/bench/{soma,judges}.py`",
     {"src/somabench/bench/soma.py", "src/somabench/bench/judges.py"}),
])
def test_cited_paths_parser(text: str, expected: set[str]) -> None:
    assert cited_paths(text) == expected


def test_checker_catches_a_missing_path() -> None:
    assert not _exists("src/somabench/soma/no_such_module.py")
    assert _exists("judges/prompts/ability_*_v1.json")
