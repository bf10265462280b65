"""``report.stats.baseline``: the paired tables' baseline, the first listed method present."""

from __future__ import annotations

from types import SimpleNamespace

from somabench.config import compose


def test_baseline_is_the_first_listed_method_the_report_has() -> None:
    """``report.stats.baseline`` lists SOMA variants in order of preference: a study that ran
    only ``soma_holdout`` still gets its paired tables (it was skipped with one fixed name)."""
    from somabench.report.tables import baseline_method, baseline_names

    stats = compose([]).report.stats
    assert baseline_names(stats)[0] == "soma"
    assert baseline_method(stats, ["original", "soma_holdout", "soma_holdout_recorded"]) == "soma_holdout"
    assert baseline_method(stats, ["soma_holdout", "soma"]) == "soma"
    assert baseline_method(stats, ["original", "surrogate"]) is None
    assert baseline_names(SimpleNamespace(baseline="history_ft")) == ["history_ft"]  # one name works
