"""The dispatcher of ``somabench`` / ``python -m somabench``: one command line for everything.

Why one: eight ``python -m`` entry points with their own flags were hard to find. Each
command is a ``main(argv) -> int`` in its own module of ``somabench.commands``, imported only
when chosen (``ls`` never imports torch). Library code raises typed errors
(``somabench.errors``); only :func:`guard` turns them into one ``error: ...`` line and an exit
code. The library never imports this package (tests/test_layers.py), so the front door sits
above every room it opens.
"""

from __future__ import annotations

import importlib
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


_HERE = "somabench.commands"
COMMANDS: dict[str, Command] = {
    "run": Command(f"{_HERE}.run:main", "serve dialogues with one method and judge them "
                   "(Hydra overrides; -m sweeps)"),
    "ls": Command(f"{_HERE}.ls:main", "what each kind= accepts: method, judge, dataset, model, "
                  "backend, judge_kind ..."),
    "judge": Command(f"{_HERE}.rejudge:main", "(re-)judge an existing run dir with a judge panel"),
    "report": Command(f"{_HERE}.report:main", "tables and figures from run dirs"),
    "view": Command(f"{_HERE}.view:main", "one static HTML page: every method's answers side by "
                    "side with the Original's, judges, gate, tokens, latency"),
    "bench": Command(f"{_HERE}.bench:main", "benchmarks -> results/bench/<name>.json"),
    "serve": Command(f"{_HERE}.serve:main", "a loopback OpenAI-compatible server for a model"),
    "assets": Command(f"{_HERE}.assets:main", "fetch / list the offline model assets"),
    "theory": Command(f"{_HERE}.theory:main", "SOMA's theory knobs from the paper's bounds"),
    "tune": Command(f"{_HERE}.tune:main", "Optuna search over config keys (hparams_search=...; "
                    "rerun resumes)"),
    "plan": Command(f"{_HERE}.plan:main", "dry-run: what a run or sweep needs, without loading "
                    "a model"),
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
    return guard(_resolve(COMMANDS[name].target), argv, debug)


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


__all__ = ["COMMANDS", "Command", "dispatch", "error_line", "guard", "main", "readable_exit",
           "usage"]
