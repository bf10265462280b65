"""``python -m somabench bench [name ...] [--out DIR] [key=value ...]``: the benchmarks.

Contract (OWNERS.md, 1): every benchmark is ``somabench.bench.<name>`` exposing
``run(out_dir: Path, overrides: list[str]) -> int`` (0 = ok) that writes
``out_dir/<name>.json`` with the machine, the resolved dtypes, every mode it ran and medians.
Overrides go to every named benchmark; name one benchmark to tune it.

Examples::

    python -m somabench bench                           # all -> results/bench/*.json
    python -m somabench bench judges --out /tmp/bench repeats=1 modes.smollm2.enabled=false
    python -m somabench bench soma bench.full.dialogues=1
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from somabench.bench import BENCHMARKS


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m somabench bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="*", metavar="name | key=value",
                        help=f"benchmarks (default: all of {list(BENCHMARKS)}) and overrides")
    parser.add_argument("--out", default="results/bench", help="output directory")
    args = parser.parse_intermixed_args(argv)
    names = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        from somabench.errors import ConfigError
        from somabench.registry import did_you_mean

        raise ConfigError(f"unknown benchmark '{unknown[0]}'.{did_you_mean(unknown[0], BENCHMARKS)}"
                          f" Available: {', '.join(BENCHMARKS)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    failures = 0
    for name in names or list(BENCHMARKS):
        module = importlib.import_module(f"somabench.bench.{name}")
        try:
            code = module.run(out, overrides)
        except Exception as exc:  # noqa: BLE001 - report every bench, fail at the end
            logging.getLogger(__name__).exception("bench %s failed", name)
            print(f"[bench] {name}: FAILED: {exc!r}", file=sys.stderr)
            code = 1
        failures += bool(code)
        print(f"[bench] {name}: {'ok' if not code else 'failed'} -> {out / (name + '.json')}")
    return 1 if failures else 0

