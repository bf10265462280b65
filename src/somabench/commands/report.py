"""``python -m somabench report <source> [--out DIR] [report.key=value ...]``

Turns runs into the paper's tables and figures under ``results/<experiment>/`` and prints what
it wrote and which figures it skipped (and why).

Examples::

    python -m somabench report outputs/tiny_paper                 # one experiment (task_name)
    python -m somabench report outputs/run/multirun --out results/sweep
    python -m somabench report outputs/run/tiny/mathmt/soma        # a single run
    python -m somabench report wandb:my-team/somabench/tiny_paper  # runs logged with logger=wandb
    python -m somabench report outputs/x report.figures.dpi=300 report.figures.formats=[png]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from somabench.testing import WARNING_PREFIX


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m somabench report", description=__doc__.split("\n\n")[1],
        epilog="\n".join(__doc__.split("\n\n")[2:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="outputs dir, multirun sweep dir, one run dir, or "
                                       "wandb:<entity>/<project>/<group>")
    parser.add_argument("--out", default=None,
                        help="output dir (default: <paths.results_dir>/<experiment>, experiment = the "
                             "runs' task_name)")
    parser.add_argument("--download-dir", default=None,
                        help="where W&B artifacts are downloaded (default: <paths.cache_dir>/wandb/...)")
    parser.add_argument("--quiet", action="store_true", help="only print errors")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. report.figures.dpi=300")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_intermixed_args(argv)  # options may follow the overrides
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="[%(levelname)s] %(message)s")
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    from somabench.config import check_overrides, compose
    from somabench.report.build import build_report
    from somabench.report.collect import WANDB_PREFIX, load, parse_wandb_source

    check_overrides(list(args.overrides))
    cfg = compose(list(args.overrides))
    download = None
    if args.source.startswith(WANDB_PREFIX):
        entity, project, group = parse_wandb_source(args.source)
        download = Path(args.download_dir) if args.download_dir else (
            Path(cfg.paths.cache_dir) / "wandb" / "_".join(p for p in (entity, project, group) if p))
    data = load(args.source, cfg.report, download_dir=download)
    out = Path(args.out) if args.out else Path(cfg.paths.results_dir) / data.experiment()
    result = build_report(data, cfg.report, out, cache_dir=str(cfg.paths.cache_dir))
    if not args.quiet:
        print(f"report for {data.source} -> {out}")
        print(f"wrote {len(result.written)} artifact(s):")
        for art in result.written:
            print(f"  {art.name:<45} {art.paper:<32} {', '.join(p.suffix[1:] for p in art.paths)}")
        if result.skipped:
            print(f"skipped {len(result.skipped)}:")
            for name, reason in result.skipped:
                print(f"  {name}: {reason}")
        for message in result.messages:
            print(_flag(message) if message.startswith(WARNING_PREFIX) else f"note: {message}")
        print(f"index: {out / 'README.md'}")
    return 0


def _flag(message: str) -> str:
    """A test-double warning (somabench.testing): red on a terminal, WARNING either way."""
    text = f"WARNING: {message}"
    return f"\033[1;31m{text}\033[0m" if sys.stdout.isatty() else text

