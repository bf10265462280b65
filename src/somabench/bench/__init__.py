"""Benchmarks behind ``make bench``; each module ``somabench.bench.<name>`` exposes
``run(out_dir, overrides) -> int`` and writes ``out_dir/<name>.json`` (OWNERS contract 1).

Why here and not in tests: performance targets are measured and reported, never asserted
with timers in the test suite.
"""

from __future__ import annotations

from typing import Any

BENCHMARKS: tuple[str, ...] = ("foundation", "soma", "judges", "vllm")  # vllm: skipped without vLLM
"""Modules ``somabench.bench.<name>``, run in this order by default (``somabench bench``)."""
SETTINGS_PREFIX = "bench."  # optional prefix of a benchmark's own settings on the command line


def load_settings(name: str, overrides: list[str]) -> Any:
    """``conf/bench/<name>.yaml`` with ``key=value`` overrides (``bench.key=value`` too)."""
    from omegaconf import OmegaConf

    from somabench.config import conf_dir

    settings = OmegaConf.load(conf_dir() / "bench" / f"{name}.yaml")
    dotlist = [o.removeprefix(SETTINGS_PREFIX) for o in overrides]
    return OmegaConf.merge(settings, OmegaConf.from_dotlist(dotlist)) if dotlist else settings
