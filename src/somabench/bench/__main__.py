"""``python -m somabench.bench [name ...]`` runs the benchmarks (all by default).

Each benchmark lives next to what it measures and writes results/bench/<name>.json.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

# name -> (module, how it is called): "dir" modules take the output dir, "argv" modules are CLIs.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "foundation": ("somabench.bench.foundation", "dir"),
    "soma": ("somabench.bench.soma", "argv"),
    "judges": ("somabench.judges.bench", "argv"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m somabench.bench")
    parser.add_argument("names", nargs="*", help=f"benchmarks (default: all of {list(BENCHMARKS)})")
    parser.add_argument("--out", default="results/bench", help="output directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name in args.names or list(BENCHMARKS):
        if name not in BENCHMARKS:
            print(f"error: unknown benchmark {name}; available: {list(BENCHMARKS)}", file=sys.stderr)
            return 2
        module_name, style = BENCHMARKS[name]
        module = importlib.import_module(module_name)
        try:
            if style == "dir":
                module.main(out)
                code = 0
            else:
                flag = "--out" if name == "soma" else "--output"
                code = module.main([flag, str(out / f"{name}.json")])
        except Exception as exc:  # noqa: BLE001 - report every bench, fail at the end
            print(f"[bench] {name}: FAILED: {exc!r}", file=sys.stderr)
            code = 1
        failures += bool(code)
        print(f"[bench] {name}: {'ok' if not code else 'failed'} -> {out / (name + '.json')}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
