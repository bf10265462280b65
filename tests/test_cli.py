"""One CLI: subcommands, bare overrides = run, ``python -m somabench <command>`` as the one way
in (the old per-module ``python -m`` entry points are gone), and readable errors (one line, an exit code, no traceback unless --debug / HYDRA_FULL_ERROR=1).

Subprocesses use the ``fake`` backend (control flow only) so no model is loaded."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from somabench.commands import COMMANDS, main, usage

ROOT = Path(__file__).resolve().parents[1]
FAKE = ["model.F.backend=testing.fake", "model.G.backend=testing.fake", "judge=none", "progress=false",
        "method=original", "limit=1"]


def somabench(args: list[str], tmp_path: Path, env: dict[str, str] | None = None,
              module: str = "somabench") -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300, env=full_env)


def private(tmp_path: Path) -> list[str]:
    return [f"paths.output_root={tmp_path / 'outputs'}",
            f"cache.path={tmp_path / 'cache' / 'requests.sqlite'}"]


def test_help_lists_every_command_with_examples(capsys: pytest.CaptureFixture) -> None:
    assert main(["help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"  {name} " in out
        assert f"python -m somabench {name}" in out or name == "run"
    assert "--out" in out and "--debug" in out and out == usage() + "\n"


def test_unknown_command_suggests_the_closest(capsys: pytest.CaptureFixture) -> None:
    assert main(["reprot", "x"]) == 2
    assert "Did you mean 'report'" in capsys.readouterr().err


def test_ls_is_a_command_and_bad_kind_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["ls", "method"]) == 0
    assert capsys.readouterr().out.startswith("method: ")
    assert main(["ls", "methd"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown kind 'methd'. Did you mean 'method'?")
    assert "Traceback" not in err


def test_plan_is_wired_lazily(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:  # argparse's --help
        main(["plan", "--help"])
    assert info.value.code == 0
    assert "dry-run" in capsys.readouterr().out.lower()


def test_bare_overrides_and_run_compose_the_same_job(tmp_path: Path) -> None:
    bare = somabench(["--cfg", "job", "method=surrogate"], tmp_path)
    run = somabench(["run", "--cfg", "job", "method=surrogate"], tmp_path)
    assert bare.returncode == run.returncode == 0, bare.stderr + run.stderr
    assert bare.stdout == run.stdout and "name: surrogate" in bare.stdout


def test_bad_dataset_is_one_line_exit_3_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "dataset": "x", "turns": [{"user": ""}]}\n')
    args = [*FAKE, "dataset=custom", f"dataset.path={bad}", *private(tmp_path)]
    out = somabench(args, tmp_path)
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "bad.jsonl:1" in lines[-1], out.stderr
    assert "Traceback" not in out.stderr and "HYDRA_FULL_ERROR" not in out.stderr
    debug = somabench(["--debug", *args], tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    env = somabench(args, tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert env.returncode != 0 and "Traceback" in env.stderr


def test_unknown_key_is_exit_2_without_traceback(tmp_path: Path) -> None:
    out = somabench(["generation.max_new_token=3"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("error: unknown config key 'generation.max_new_token'")
    assert "Traceback" not in out.stderr


def test_commands_are_reached_through_python_m_somabench_only(tmp_path: Path) -> None:
    out = somabench(["judge", "--help"], tmp_path)
    assert out.returncode == 0 and "re-judge" in out.stdout
    out = somabench(["judge", str(tmp_path / "nowhere"), "judge=embedding"], tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "run.json" in out.stderr
    package = ROOT / "src" / "somabench"  # no second door: the old per-module entry points
    gone = ["cli.py", "judge.py", "report/__main__.py", "bench/__main__.py"]
    assert [name for name in gone if (package / name).exists()] == []
    assert sorted(p.parent.name for p in package.rglob("__main__.py")) == ["somabench"]


def test_every_command_lives_in_the_commands_package() -> None:
    for name, command in COMMANDS.items():
        module_name, _, attr = command.target.partition(":")
        assert module_name.startswith("somabench.commands."), name
        assert callable(getattr(importlib.import_module(module_name), attr)), name


def test_a_closed_pipe_ends_quietly() -> None:
    """`python -m somabench help | head -1`: the reader leaves first; no traceback, exit 141."""
    proc = subprocess.Popen([sys.executable, "-m", "somabench", "help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the interpreter has even started: its print hits EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141)
    assert "Traceback" not in err and "BrokenPipe" not in err
