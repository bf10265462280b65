"""somabench: a benchmarking harness for efficient multi-turn LLM serving (SOMA + baselines)."""

__version__ = "0.1.0"
