"""Test doubles: the scripted, fault-injecting OpenAI-compatible server (a benchmark needs it
too, so it cannot live under tests/) and the ``testing.fake`` backend.

Why a namespace of their own: nothing a double produces may reach a table silently. A backend
that is (or talks to) a test double says so in ``describe()[TEST_DOUBLE_KEY]``; the run header
lists them under ``test_doubles`` (:func:`doubles_in`), the run log and every report print a
``TEST DOUBLE:`` warning for such a run (:func:`report_warnings`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

TEST_DOUBLE_KEY = "test_double"
"""Key of a backend's ``describe()`` naming the test double it is or talks to."""
HEADER_KEY = "test_doubles"
"""run.json key: ``["<role>: <what>", ...]``, empty for a run on real models only."""
NAMESPACE = "testing."
"""Prefix of every test-double registry name (``testing.fake``)."""
WARNING_PREFIX = "TEST DOUBLE:"


def doubles_in(models: Mapping[str, Any] | None) -> list[str]:
    """``"<role>: <what>"`` for each entry of run.json ``models`` that is a test double."""
    return [f"{role}: {info[TEST_DOUBLE_KEY]}" for role, info in sorted((models or {}).items())
            if isinstance(info, Mapping) and info.get(TEST_DOUBLE_KEY)]


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
    from somabench.rundir import RUN_HEADER

    out = []
    for run in runs:
        header: Mapping[str, Any] = {"config": run.config}
        path = run.path / RUN_HEADER
        if run.kind == "run" and path.exists():
            try:
                header = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                pass  # the collector already warns about an unreadable run.json
        doubles = run_doubles(header)
        if doubles:
            out.append(warning(run.key, doubles))
    return out
