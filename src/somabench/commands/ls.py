"""``python -m somabench ls [kind ...]`` and ``ls runs [folder ...]``: what each ``kind=``
accepts, and the run dirs under a folder. Imports no model library (no torch)."""

from __future__ import annotations

from pathlib import Path

CONFIG_GROUPS = ("model", "dataset", "experiment", "hparams_search", "debug", "logger")
"""Config groups ``ls`` lists too: their options are ``conf/<group>/*.yaml`` stems."""


def main(argv: list[str]) -> int:
    """``ls [kind ...]``: what each ``kind=`` accepts. Registries (method, judge, backend,
    dataset_loader, judge_kind) list their keys; config groups (dataset, model, ...) their files."""
    from somabench.config import conf_dir
    from somabench.errors import ConfigError
    from somabench.registry import ALL, did_you_mean, load_builtin

    kinds = [*ALL, *CONFIG_GROUPS]
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: python -m somabench ls [{' | '.join(kinds)}] ...\n"
              "       python -m somabench ls runs [outputs or results folder ...]")
        return 0
    if argv and argv[0] == "runs":  # run dirs, their status and panel versions
        return runs(argv[1:])
    load_builtin()
    for kind in argv or kinds:
        if kind in ALL:
            names = ALL[kind].names()
        elif kind in CONFIG_GROUPS:
            names = sorted(p.stem for p in (conf_dir() / kind).glob("*.yaml"))
        else:
            raise ConfigError(f"unknown kind '{kind}'.{did_you_mean(kind, kinds)} "
                              f"Kinds: {', '.join(kinds)}")
        print(f"{kind}: {', '.join(names)}")
    return 0


def runs(paths: list[str]) -> int:
    """``ls runs [folder ...]``: one line per run dir (default folder: ``outputs``)."""
    from somabench.errors import ConfigError
    from somabench.runs_list import run_lines

    for root in [Path(p) for p in (paths or ["outputs"])]:
        if not root.exists():
            raise ConfigError(f"{root} does not exist; pass an outputs or results folder")
        for line in run_lines(root):
            print(line)
    return 0
