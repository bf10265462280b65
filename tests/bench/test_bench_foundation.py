"""The foundation bench reports medians over repeats and keeps every run (no best-of)."""

from __future__ import annotations

from types import SimpleNamespace

from somabench.bench import foundation, load_settings


def test_overhead_and_batching_are_medians_over_fresh_runs(tmp_path, monkeypatch) -> None:
    walls = iter([10.0, 12.0, 11.0])          # overhead: three runs, model 9 s each
    batch = iter([100.0, 25.0, 90.0, 30.0, 120.0, 40.0])  # batching: (batch 1, batch 8) x 3
    seen_dirs = []

    def fake_serve(cfg, batch_size):
        seen_dirs.append(cfg.paths.output_root)
        wall = next(walls) if "/batch" not in cfg.paths.output_root else next(batch)
        return wall, SimpleNamespace(seconds=9.0, calls=8), 100

    monkeypatch.setattr(foundation, "_serve", fake_serve)
    settings = load_settings("foundation", [])
    over = foundation.bench_overhead(settings, tmp_path)
    assert over["repeats"] == 3 and len(over["per_run"]) == 3
    assert over["overhead_share"] == round(1 - 9 / 11, 4)          # the median run, not the best
    assert over["wall_s"] == 11.0 and over["met"] is False
    result = foundation.bench_batching(settings, tmp_path)
    assert [r["speedup"] for r in result["per_run"]] == [4.0, 3.0, 3.0]
    assert result["speedup"] == 3.0 and result["wall_batch1_s"] == 100.0
    assert len(set(seen_dirs)) == len(seen_dirs)  # every run in a fresh dir (no resume)


def test_timed_wrapper_passes_every_argument_through() -> None:
    """The wrapper must not pin generate_text's signature (HFBackend gained ``base_rows``)."""
    class Backend:
        def generate_text(self, prompts, gen, base_rows=None):
            return [(p, gen, base_rows) for p in prompts]

    backend = Backend()
    timed = foundation._Timed(backend)
    assert backend.generate_text(["a"], "g", [True]) == [("a", "g", [True])]
    assert backend.generate_text(["b"], gen="g") == [("b", "g", None)]
    assert timed.calls == 2 and timed.seconds >= 0.0
