"""Baseline methods (installed as ``somabench.baselines``); each registers itself by name."""

from somabench.registry import methods

methods.register("original", "somabench.baselines.original:Original")
methods.register("surrogate", "somabench.baselines.surrogate:Surrogate")
