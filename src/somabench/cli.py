"""``somabench`` / ``python -m somabench``: one command line for everything.

Why one: eight ``python -m`` entry points with their own flags were hard to find. Each
command is a ``main(argv) -> int`` in its own module, imported only when chosen (``ls``
never imports torch). Library code raises typed errors (``somabench.errors``); only
:func:`guard` turns them into one ``error: ...`` line and an exit code.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DEBUG_FLAG = "--debug"
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"  # Hydra's own switch; --debug sets it too


@dataclass(frozen=True)
class Command:
    """A subcommand: ``module:function`` taking ``argv`` and returning an exit code."""

    target: str
    summary: str
    missing: str | None = None
    """Printed when ``target``'s module is not there yet (instead of a traceback)."""


COMMANDS: dict[str, Command] = {
    "run": Command("somabench.cli:run", "serve dialogues with one method and judge them "
                   "(Hydra overrides; -m sweeps)"),
    "ls": Command("somabench.cli:ls", "what each kind= accepts: method, judge, dataset, model, "
                  "backend, judge_kind ..."),
    "judge": Command("somabench.judge:main", "(re-)judge an existing run dir with a judge panel"),
    "report": Command("somabench.report.__main__:main", "tables and figures from run dirs"),
    "view": Command("somabench.view:main", "one static HTML page: every method's answers side by "
                    "side with the Original's, judges, gate, tokens, latency"),
    "bench": Command("somabench.bench.__main__:main", "benchmarks -> results/bench/<name>.json"),
    "serve": Command("somabench.serve:main", "a loopback OpenAI-compatible server for a model"),
    "assets": Command("somabench.assets:main", "fetch / list the offline model assets"),
    "theory": Command("somabench.soma.theory:main", "SOMA's theory knobs from the paper's bounds"),
    "tune": Command("somabench.tune:main", "Optuna search over config keys (hparams_search=...; "
                    "rerun resumes)"),
    "plan": Command("somabench.plan:main", "dry-run: what a run or sweep needs, without loading "
                    "a model", missing="the plan command (somabench/plan.py) is not installed "
                    "in this checkout yet"),
}

USAGE = """\
usage: python -m somabench [--debug] [COMMAND] [ARGS ...]
       python -m somabench [group=option ...] [key=value ...]   (= run)

Commands:
{commands}

Same flags everywhere: --out DIR (where a command writes), --debug (show tracebacks; also
HYDRA_FULL_ERROR=1), -h/--help per command (`run --help` shows the config groups).

Examples:
  python -m somabench method=soma dataset=mathmt model=tiny        # one run (resumes if rerun)
  python -m somabench -m method=original,surrogate judge=embedding  # a sweep
  python -m somabench experiment=tiny_paper                         # a paper table, tiny scale
  python -m somabench ls method                                     # what method= accepts
  python -m somabench judge outputs/run/tiny/mathmt/soma judge=local
  python -m somabench report outputs/tiny_paper --out results/tiny_paper
  python -m somabench view outputs/tiny_paper --out view.html       # open from disk
  python -m somabench bench judges --out results/bench
  python -m somabench serve --asset smollm2-135m-instruct --port 8000
  python -m somabench assets fetch tiny
  python -m somabench theory --delta 0.05 --theta 0.1 --r-act 8 --eta 0.1 --epsilon 0.05 \\
      --sigma-delta 0.1
  python -m somabench plan experiment=table1_llama
  python -m somabench tune hparams_search=soma_optuna_tiny dataset=mathmt search.n_trials=5

Exit codes: 0 ok, 1 the run failed (see run.json / errors.jsonl), 2 bad command line or
config, 3 bad dataset, 4 missing model or asset, 5 the run dir holds another config.
"""


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def debug_requested(argv: Sequence[str] = ()) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(FULL_ERROR_ENV, "") == "1"


def error_line(exc: BaseException) -> str:
    """``error: <message>`` (the message already says what, where and how to fix)."""
    text = str(exc).strip() or type(exc).__name__
    return text if text.startswith("error:") else f"error: {text}"


def guard(func: Callable[[list[str]], int], argv: Sequence[str], debug: bool = False) -> int:
    """Run ``func(argv)``; a readable error becomes one line on stderr and its exit code.

    Bugs (errors without an exit code in ``somabench.errors``) keep their traceback, and so
    does everything under ``--debug`` / ``HYDRA_FULL_ERROR=1``."""
    try:
        return int(func(list(argv)) or 0)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        code = readable_exit(exc, debug)
        if code is None:
            raise
        print(error_line(exc), file=sys.stderr)
        return code


def readable_exit(exc: BaseException, debug: bool = False) -> int | None:
    """The exit code to report ``exc`` with as one line, or None to keep its traceback."""
    from somabench.errors import exit_code

    code = exit_code(exc)
    return None if code is None or debug or debug_requested() else code


def _resolve(target: str) -> Callable[[list[str]], int]:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def dispatch(name: str, argv: Sequence[str], debug: bool = False) -> int:
    """Run the subcommand ``name`` with ``argv``."""
    command = COMMANDS[name]
    module_name = command.target.partition(":")[0]
    if command.missing and importlib.util.find_spec(module_name) is None:
        print(f"error: {command.missing}", file=sys.stderr)
        return 2
    return guard(_resolve(command.target), argv, debug)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m somabench`` and the ``somabench`` script."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # `somabench ls | head`: the reader left; no traceback (Python's documented recipe:
        # point stdout at devnull so the interpreter's final flush cannot fail again)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE_EXIT


BROKEN_PIPE_EXIT = 141
"""128 + SIGPIPE, what a shell reports for a command whose reader closed the pipe."""


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args
    args = [a for a in args if a != DEBUG_FLAG]
    if debug:
        os.environ[FULL_ERROR_ENV] = "1"
    if args and args[0] in ("help", "-h"):
        print(usage())
        return 0
    if args and args[0] in COMMANDS:
        return dispatch(args[0], args[1:], debug)
    if args and not _looks_like_run(args[0]):
        from somabench.registry import did_you_mean

        print(f"error: unknown command '{args[0]}'.{did_you_mean(args[0], list(COMMANDS))}\n"
              f"{usage()}", file=sys.stderr)
        return 2
    return dispatch("run", args, debug)  # bare overrides: a run, exactly as before


def _looks_like_run(arg: str) -> bool:
    """Hydra overrides (``k=v``, ``+k=v``, ``~k``) and Hydra flags (``-m``, ``--cfg``...)."""
    return "=" in arg or arg.startswith(("-", "+", "~"))


# -- run ---------------------------------------------------------------------------------------
HYDRA_ONLY_FLAGS = ("-m", "--multirun", "--help", "-h", "--cfg", "-c", "--info", "--hydra-help",
                    "--shell-completion", "--resolve", "-p", "--package")


def run(argv: list[str]) -> int:
    """``run [overrides]``: preflight the overrides, then hand them to Hydra."""
    import hydra

    from somabench.config import check_overrides, conf_dir

    if not any(a.startswith(HYDRA_ONLY_FLAGS) for a in argv):
        check_overrides([a for a in argv if not a.startswith("-")])
    sys.argv = [sys.argv[0] or "somabench", *argv]  # Hydra reads its arguments from sys.argv

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
    def _hydra_main(cfg):  # noqa: ANN001, ANN202 - Hydra's signature
        from somabench.sweep import run_job  # in a multirun a failed job is recorded, not raised

        try:
            return run_job(cfg)
        except Exception as exc:
            code = readable_exit(exc)
            if code is None:
                raise
            # Raised past Hydra's error report (it catches Exception only): one line, no trace.
            print(error_line(exc), file=sys.stderr)
            raise SystemExit(code) from None

    _hydra_main()
    return 0


# -- ls ----------------------------------------------------------------------------------------
CONFIG_GROUPS = ("model", "dataset", "experiment", "hparams_search", "debug", "logger")
"""Config groups ``ls`` lists too: their options are ``conf/<group>/*.yaml`` stems."""


def ls(argv: list[str]) -> int:
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
        from somabench.runs_list import main as list_runs

        return list_runs(argv[1:])
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


def alias(command: str) -> int:
    """``python -m somabench.<command>`` kept as a thin alias of ``python -m somabench <command>``."""
    return main([command, *sys.argv[1:]])


__all__ = ["COMMANDS", "alias", "dispatch", "guard", "main", "usage"]
