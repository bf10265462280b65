"""``python -m somabench plan [overrides] [--json] [--strict]``: the dry-run of a run or sweep,
without loading a model (what it computes: ``somabench.plan``)."""

from __future__ import annotations

import argparse
import json
import sys

from somabench import plan as planner
from somabench.errors import ConfigError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m somabench plan",
                                     description=(planner.__doc__ or "").split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=table1_llama")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when anything is missing")
    parser.add_argument("--max-jobs", type=int, default=50, help="jobs listed (default 50)")
    args = parser.parse_args(argv)
    overrides = [o for o in args.overrides if o not in ("-m", "--multirun", "+dry_run=true")]
    try:
        plan = planner.build_plan(overrides)
    except ConfigError as exc:  # the same one line a run prints
        print(f"error: {exc}", file=sys.stderr)
        return ConfigError.exit_code
    except Exception as exc:  # noqa: BLE001 - a config error is the message, not a traceback
        print(f"error: cannot plan {' '.join(overrides)}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan.to_json(), indent=2) if args.json else planner.render(plan, args.max_jobs))
    return 1 if args.strict and plan.missing else 0

