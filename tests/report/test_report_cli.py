"""``python -m somabench report``: every table and every figure whose inputs exist, non-empty
files, and a stated reason for each skipped figure."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from somabench.commands.report import main
from somabench.report.build import build_report
from somabench.report.collect import load_local
from somabench.report.figures import plateau_points, warm_window_points

# score artifacts end in the judge panel's name (p1 in the fixture): panels are never mixed
TABLES = ["table1_similarity_tiny_p1", "table1_similarity_post_switch_tiny_p1", "similarity_by_judge_tiny_p1",
          "table1_similarity_vs_soma_tiny_p1", "tokens_per_dialogue_tiny", "cost_per_dialogue_tiny",
          "throughput_tiny", "abilities_tiny_p1"]
FIGURES = ["fig1_relative_tokens_per_turn_tiny", "fig1_served_tokens_per_turn_tiny", "fig2_tokens_per_dialogue_tiny",
           "fig2_cost_per_dialogue_tiny", "fig5-6_tokens_by_dataset_tiny", "fig7-8_throughput_tiny",
           "fig3-9_ablation_tiny_p1", "fig10_abilities_tiny_p1", "fig_similarity_per_turn_tiny_p1"]
STUDY = ["study_tiny_p1", "study_quality_cost_tiny_p1"]  # report/study.py (issue 22)
SWEEP_FIGURES = ["fig11_warm_window_tiny_p1", "fig12_plateau_vs_best_w_tiny_p1"]


def _check_files(out, stems, exts):
    for stem in stems:
        for ext in exts:
            path = out / f"{stem}.{ext}"
            assert path.exists() and path.stat().st_size > 0, path
            if ext == "png":
                with Image.open(path) as image:
                    assert min(image.size) > 100


def test_cli_writes_everything_and_explains_skips(outputs, tmp_path, capsys):
    out = tmp_path / "results"
    assert main([str(outputs / "tiny_exp"), "--out", str(out)]) == 0
    _check_files(out, TABLES, ["md", "tex", "csv"])
    _check_files(out, FIGURES, ["png", "pdf"])
    printed = capsys.readouterr().out
    _check_files(out, ["study_tiny_p1"], ["md", "csv"])
    assert f"wrote {len(TABLES) + len(FIGURES) + len(STUDY)} artifact(s)" in printed
    assert "fig11_warm_window_tiny_p1: needs soma runs with >= 2 warm windows W" in printed
    assert "fig12_plateau_vs_best_w_tiny_p1: needs a W sweep on >= 3 datasets" in printed
    index = (out / "README.md").read_text()
    assert "## Skipped" in index and "fig11_warm_window_tiny_p1" in index
    assert "[png](fig2_tokens_per_dialogue_tiny.png)" in index
    report = json.loads((out / "report.json").read_text())
    assert set(SWEEP_FIGURES) <= set(report["skipped"])
    assert set(report["written"]) == set(TABLES) | set(FIGURES) | set(STUDY)
    assert (out / "runs.csv").stat().st_size > 0
    assert (out / "data" / "dialogues.csv").stat().st_size > 0


def test_cli_overrides_and_default_out(outputs, tmp_path, monkeypatch):
    monkeypatch.setenv("PROJECT_ROOT", str(tmp_path / "proj"))
    assert main([str(outputs / "tiny_exp"), "--quiet", "report.figures.formats=[png]"]) == 0
    out = tmp_path / "proj" / "results" / "tiny_exp"  # <paths.results_dir>/<task_name>
    assert (out / "fig2_tokens_per_dialogue_tiny.png").exists()
    assert not (out / "fig2_tokens_per_dialogue_tiny.pdf").exists()


def test_warm_window_sweep_figures_and_pearson_r(outputs_with_sweep, report_cfg, tmp_path):
    data = load_local(outputs_with_sweep / "ww", report_cfg)
    result = build_report(data, report_cfg, tmp_path / "ww")
    _check_files(tmp_path / "ww", SWEEP_FIGURES, ["png", "pdf"])
    _check_files(tmp_path / "ww", ["warm_window_tiny_p1"], ["md", "csv", "tex"])
    from somabench.report.build import similarity_dialogues, similarity_scores, warm_windows

    sim = similarity_dialogues(similarity_scores(data, report_cfg), "p1")
    points = warm_window_points(sim, warm_windows(data, report_cfg), report_cfg, "tiny")
    plateaus = plateau_points(points, report_cfg).set_index("dataset")
    # by hand (report_fixtures.WARM, tolerance 1.0 point)
    assert plateaus.loc["mathmt"].tolist() == pytest.approx([80.5, 2.0])
    assert plateaus.loc["mtbench"].tolist() == pytest.approx([75.0, 3.0])
    assert plateaus.loc["craigslist"].tolist() == pytest.approx([85.5, 1.0])
    # r over (2, 80.5), (3, 75), (1, 85.5) = -10.5 / sqrt(2 × 55.1667) = -0.9996
    assert "Pearson r between best W and plateau similarity = -1.00" in " ".join(result.messages)
    from scipy.stats import pearsonr

    assert pearsonr([2, 3, 1], [80.5, 75, 85.5])[0] == pytest.approx(-10.5 / (2 * 55.16667) ** 0.5, abs=1e-4)


def test_runs_without_scores_skip_similarity_artifacts_with_reasons(outputs, report_cfg, tmp_path):
    for scores in (outputs / "tiny_exp").rglob("scores.jsonl"):
        scores.unlink()
    result = build_report(load_local(outputs / "tiny_exp", report_cfg), report_cfg, tmp_path / "r")
    skipped = dict(result.skipped)
    assert "run with a judge" in skipped["table1_similarity_tiny"]
    assert "needs similarity scores for at least two of" in skipped["fig3-9_ablation_tiny"]
    assert "no ok ability scores" in skipped["abilities_tiny"]
    written = {a.name for a in result.written}
    assert {"fig2_tokens_per_dialogue_tiny", "fig7-8_throughput_tiny", "tokens_per_dialogue_tiny"} <= written


def test_single_run_dir_and_missing_prices(outputs, report_cfg, tmp_path):
    run_dir = tmp_path / "single"
    shutil.copytree(outputs / "tiny_exp" / "tiny" / "mathmt" / "surrogate", run_dir)
    header = json.loads((run_dir / "run.json").read_text())
    del header["config"]["model"]["prices"]
    header["reference_dir"] = None
    (run_dir / "run.json").write_text(json.dumps(header))
    result = build_report(load_local(run_dir, report_cfg), report_cfg, tmp_path / "r")
    skipped = dict(result.skipped)
    assert "no model.prices" in skipped["fig2_cost_per_dialogue_tiny"]
    assert "no Original" in skipped["fig1_served_tokens_per_turn_tiny"]
    assert "table1_similarity_tiny_p1" in {a.name for a in result.written}
