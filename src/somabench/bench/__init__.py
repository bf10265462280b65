"""Benchmarks behind ``make bench``; each module writes results/bench/<name>.json.

Why here and not in tests: performance targets are measured and reported, never asserted
with timers in the test suite.
"""
