"""Test doubles: the scripted, fault-injecting OpenAI-compatible server (a benchmark needs it
too, so it cannot live under tests/) and the ``testing.fake`` backend.

Why a namespace of their own: nothing a double produces may reach a table silently. A backend
that is (or talks to) a test double says so in ``describe()[TEST_DOUBLE_KEY]``; the run header
lists them under ``test_doubles`` (:func:`doubles_in`), the run log and every report print a
``TEST DOUBLE:`` warning for such a run (:func:`report_warnings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from somabench.errors import RunFileError
from somabench.rundir import TEST_DOUBLE_KEY, doubles_in, read_header

HEADER_KEY = "test_doubles"
"""run.json key: ``["<role>: <what>", ...]``, empty for a run on real models only."""
NAMESPACE = "testing."
"""Prefix of every test-double registry name (``testing.fake``)."""
WARNING_PREFIX = "TEST DOUBLE:"


def warning(where: str, doubles: list[str]) -> str:
    """The one line a run log and a report print for a run that used test doubles."""
    return (f"{WARNING_PREFIX} {where} used test double(s) {'; '.join(doubles)}; its numbers are "
            "not model results")


def run_doubles(header: Mapping[str, Any]) -> list[str]:
    """The test doubles of one run.json: recorded ones, plus any ``testing.*`` backend its
    config names (a run killed before its models were recorded)."""
    found = list(header.get(HEADER_KEY) or doubles_in(header.get("models")))
    models = (header.get("config") or {}).get("model") or {}
    for role, spec in sorted(models.items()):
        backend = str((spec.get("backend") if isinstance(spec, Mapping) else None) or "")
        if backend.startswith(NAMESPACE) and not any(d.startswith(f"{role}: ") for d in found):
            found.append(f"{role}: {backend}")
    return found


def report_warnings(runs: list[Any]) -> list[str]:
    """One warning per run (``somabench.report.collect.RunInfo``: ``key``, ``kind``, ``path``,
    ``config``) that used a test double: no table is built from them without saying so."""
    out = []
    for run in runs:
        header: Mapping[str, Any] = {"config": run.config}
        if run.kind == "run":
            try:
                recorded = read_header(run.path)
            except RunFileError:
                recorded = None  # the collector already warns about an unreadable run.json
            if recorded is not None:
                header = recorded.to_json()
        doubles = run_doubles(header)
        if doubles:
            out.append(warning(run.key, doubles))
    return out


__all__ = ["HEADER_KEY", "NAMESPACE", "TEST_DOUBLE_KEY", "WARNING_PREFIX", "doubles_in",
           "report_warnings", "run_doubles", "warning"]
