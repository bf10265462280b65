"""``python -m somabench tune hparams_search=<name> [overrides]``: an Optuna search over config
keys; the same command again resumes (the search itself: ``somabench.tune``)."""

from __future__ import annotations

import argparse
import logging

from somabench.tune import tune


def main(argv: list[str]) -> int:
    """``somabench tune hparams_search=<name> [overrides]``."""
    parser = argparse.ArgumentParser(
        prog="somabench tune",
        description="Optuna search over config keys (conf/hparams_search/*.yaml `search:`). "
                    "Rerun the same command to resume; raise search.n_trials to extend.")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. "
                        "hparams_search=soma_optuna_tiny dataset=mathmt search.n_trials=5")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
    return tune(list(args.overrides))
