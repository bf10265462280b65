"""``python -m somabench.bench [name ...]`` runs the benchmarks (all by default)."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pkgutil
import sys
from pathlib import Path

import somabench.bench as bench_pkg


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(bench_pkg.__path__) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m somabench.bench")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {available()})")
    parser.add_argument("--out", default="results/bench", help="output directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name in args.names or available():
        if name not in available():
            print(f"error: unknown benchmark {name}; available: {available()}", file=sys.stderr)
            return 2
        module = importlib.import_module(f"somabench.bench.{name}")
        try:
            result = module.main(out)
        except Exception as exc:  # noqa: BLE001 - report every bench, fail at the end
            failures += 1
            print(f"[bench] {name}: FAILED: {exc!r}", file=sys.stderr)
            continue
        print(f"[bench] {name}: {json.dumps(result.get('summary', result), default=str)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
