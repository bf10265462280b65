"""Every repo path the docs and config comments cite exists, every relative link (and its
#anchor) resolves, docs/architecture.md's module tree is true and complete, and the README
stays a map (size limit, CI's test command).

Why: docs rot silently. The README once cited a ``drift.py`` that did not exist and six
experiment files pointed at ``sweeps/*.md`` recipes that were never written. This test reads
text only (no imports of somabench), so it runs in well under a second.
"""

from __future__ import annotations

import os
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
HEADING_RE = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
# The module tree lives in the architecture page; the README is a map that links to it.
ARCHITECTURE = "docs/architecture.md"
TREE_HEADING = "## The tree"
TREE_CODE_DIRS = ("src/somabench", "baselines", "judges")
README_MAX_BYTES = 14_000  # issue 24: the README is a map, detail lives in docs/


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


def _strip_code_blocks(text: str) -> str:
    """Markdown without fenced code blocks: a ``# comment`` in a bash block is not a heading."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def heading_slug(heading: str) -> str:
    """GitHub's anchor for a heading: link and code markup dropped, lower case, punctuation
    removed, each space a hyphen (so ``A → B`` becomes ``a--b``)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor the headings of a markdown page define (a repeated slug gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in HEADING_RE.findall(_strip_code_blocks(text)):
        slug = heading_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def broken_links(path: Path) -> list[str]:
    """Relative links of one page whose file does not exist or whose ``#anchor`` no heading defines."""
    missing = []
    for target in LINK_RE.findall(path.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part) if file_part else path
        if not dest.exists():
            missing.append(f"{path.name}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            missing.append(f"{path.name}: {target} (no heading #{anchor} in {file_part or path.name})")
    return missing


def test_markdown_links_resolve() -> None:
    missing = [line for path in _doc_files() for line in broken_links(path)]
    assert not missing, "broken links:\n" + "\n".join(missing)


def test_bare_module_names_exist() -> None:
    modules = {p.name for d in CODE_DIRS for p in (ROOT / d).rglob("*.py")}
    missing = sorted(f"{path.relative_to(ROOT)}: {name}" for path in _doc_files()
                     for name in BARE_RE.findall(path.read_text(encoding="utf-8"))
                     if name not in modules)
    assert not missing, "modules cited but missing:\n" + "\n".join(missing)


def tree_entries(page: str) -> list[str]:
    """Paths named by the ``## The tree`` block (``├── name/   <- role``), built from indentation."""
    block = page.split(TREE_HEADING, 1)[1].split("```", 2)[1]
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


def code_modules() -> list[str]:
    """Every module of the package and of baselines/ and judges/, repo-relative, except
    ``__init__.py`` (its package's line describes it). Symlinked folders are skipped: the
    untracked ``src/somabench/{baselines,judges}`` links point at the top-level packages."""
    out = []
    for top in TREE_CODE_DIRS:
        for folder, dirs, files in os.walk(ROOT / top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not (Path(folder) / d).is_symlink())
            out += [(Path(folder) / f).relative_to(ROOT).as_posix()
                    for f in sorted(files) if f.endswith(".py") and f != "__init__.py"]
    return out


def unlisted_modules(entries: list[str], modules: list[str]) -> list[str]:
    listed = {e.rstrip("/") for e in entries}
    return [m for m in modules if m not in listed]


def _tree() -> list[str]:
    entries = tree_entries((ROOT / ARCHITECTURE).read_text(encoding="utf-8"))
    assert len(entries) > 20, f"the tree under {TREE_HEADING!r} in {ARCHITECTURE} was not found or not parsed"
    return entries


def test_tree_names_only_existing_paths() -> None:
    missing = [e for e in _tree() if not _exists(e)]
    assert not missing, f"{ARCHITECTURE}'s tree names paths that do not exist (remove or rename the lines): {missing}"


def test_tree_lists_every_module() -> None:
    unlisted = unlisted_modules(_tree(), code_modules())
    assert not unlisted, f"modules missing from {ARCHITECTURE}'s tree (add one line each): {unlisted}"


def test_readme_is_a_map() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes (limit {README_MAX_BYTES}): move detail to a docs/ page and link it")


def test_readme_shows_the_ci_test_command() -> None:
    """CI runs exactly the README's test command, so a newcomer's ``make test`` is what CI checks."""
    ci_make = re.findall(r"^make ([\w-]+)\s*$", (ROOT / ".ci" / "run").read_text(encoding="utf-8"), flags=re.M)
    assert ci_make, ".ci/run runs no `make <target>` line"
    quickstart = re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S | re.M)
    commands = {line.strip() for block in quickstart for line in block.splitlines()}
    assert f"make {ci_make[0]}" in commands, f"README's bash blocks lack `make {ci_make[0]}`, the first command .ci/run runs"


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


@pytest.mark.parametrize(("heading", "slug"), [
    ("Does SOMA's adaptation help? The study (issue 22; in progress)",
     "does-somas-adaptation-help-the-study-issue-22-in-progress"),
    ("`make bench` → `results/bench/soma.json`", "make-bench--resultsbenchsomajson"),
    ("Fast F through llama.cpp (optional)", "fast-f-through-llamacpp-optional"),
    ("Speed on 2 CPU cores", "speed-on-2-cpu-cores"),
])
def test_heading_slug_like_github(heading: str, slug: str) -> None:
    assert heading_slug(heading) == slug


def test_link_checker_catches_a_missing_file_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title\n\n## Part two\n\n```bash\n# not a heading\n```\n## Part two\n")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#part-two) [dup](a.md#part-two-1) [self](#top) [file](gone.md) "
                    "[anchor](a.md#not-a-heading) [web](https://x.org/y.md#z)\n# Top\n")
    assert broken_links(page) == ["b.md: gone.md (no such file)",
                                  "b.md: a.md#not-a-heading (no heading #not-a-heading in a.md)"]


def test_tree_checker_catches_an_unlisted_module() -> None:
    page = TREE_HEADING + "\n\n```\n├── src/somabench/   <- pkg\n│   ├── cli.py   <- x\n│   └── soma/   <- y\n" \
        "│       └── lora.py   <- z\n└── baselines/   <- b\n```\n"
    entries = tree_entries(page)
    assert entries == ["src/somabench/", "src/somabench/cli.py", "src/somabench/soma/",
                       "src/somabench/soma/lora.py", "baselines/"]
    modules = ["src/somabench/cli.py", "src/somabench/soma/lora.py", "src/somabench/soma/mining.py"]
    assert unlisted_modules(entries, modules) == ["src/somabench/soma/mining.py"]
    assert "src/somabench/runner.py" in code_modules()
    assert not any("__init__" in m or m.startswith("src/somabench/baselines/") for m in code_modules())


STUDY_TABLE = "results/study_tiny_qwen/study_tiny_qwen_embedding.md"
# The README's study paragraph quotes this row (SOMA with its acceptance test blocking) and its
# break-even count.
STUDY_SOMA_ROW = "SOMA (B held-out mined)"
BREAK_EVEN_TABLE = "results/study_tiny_qwen/study_break_even_tiny_qwen.md"


def study_row(table: str, dataset: str, method: str) -> dict[str, str]:
    """One row of the committed study table as ``{column: cell}``."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        row = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        if row["dataset"] == dataset and row["method"] == method:
            return row
    raise AssertionError(f"{STUDY_TABLE} has no row {dataset}/{method}: update the README's study paragraph")


def readme_study_paragraph(readme: str) -> str:
    return readme.split("**Does SOMA's adaptation help?", 1)[1].split("\n\n", 1)[0]


def test_readme_study_numbers_match_the_committed_table() -> None:
    """The README quotes the study's status; a new results commit must update it, not leave it stale."""
    table = (ROOT / STUDY_TABLE).read_text(encoding="utf-8")
    paragraph = " ".join(readme_study_paragraph((ROOT / "README.md").read_text(encoding="utf-8")).split())
    soma = study_row(table, "remedi", STUDY_SOMA_ROW)
    share = soma["G share %"].split()[0]
    switched = soma["switched"].split("/")[0]
    ratio = f"{float(soma['tokens vs Original'].rstrip('x')):.1f}x"
    turns = study_row((ROOT / BREAK_EVEN_TABLE).read_text(encoding="utf-8"), "remedi",
                      STUDY_SOMA_ROW)["G turns to break even"]
    quoted = [f"SOMA has {soma['n']} sessions", f"switched in {switched}", f"G served {share} %", ratio,
              f"{soma['similarity %'].split()[0]} % similarity", f"{turns} turns served by G"]
    stale = [phrase for phrase in quoted if phrase not in paragraph]
    assert not stale, f"README's study paragraph no longer matches {STUDY_TABLE}: expected {stale}"
    for method in ("Original", "Surrogate"):
        n = study_row(table, "remedi", method)["n"]
        assert f"{n} context-dependent ReMeDi sessions" in paragraph, f"{method} has n = {n}, not complete"
