"""Finding runs: outputs dirs, sweep dirs, references outside the source, variants, W&B specs."""

from __future__ import annotations

import json
import shutil

import pytest

from somabench.errors import ConfigError
from somabench.records import DialogueRecord, RecordStore, TurnRecord, Usage
from somabench.report.collect import find_run_dirs, load_local, parse_wandb_source


def test_finds_runs_and_the_references_they_point_to(outputs, report_cfg):
    data = load_local(outputs / "tiny_exp", report_cfg)
    kinds = {r.key: r.kind for r in data.runs}
    assert kinds["tiny/mathmt/soma"] == "run"
    # references live outside the source; found through run.json's reference_dir/key
    assert kinds["references/mathmt-tiny-0123456789"] == "reference"
    assert len([k for k in kinds.values() if k == "run"]) == 5
    ref = data.run("references/mathmt-tiny-0123456789")
    assert (ref.method, ref.dataset, ref.family, ref.label) == ("original", "mathmt", "tiny", "Original")
    assert data.experiment() == "tiny_exp"
    assert data.families() == ["tiny"]
    assert data.prices("tiny")["G"]["prompt"] == 0.02


def test_reference_is_restricted_to_the_dialogues_the_runs_served(outputs, report_cfg):
    ref_dir = outputs / "references" / "mathmt-tiny-0123456789"
    store = RecordStore(ref_dir)  # a dialogue from an earlier, larger run of the reference
    turn = TurnRecord(run_id="ref", dialogue_id="d9", dataset="mathmt", turn=0, method="original",
                      served_by="F", model_id="f", user="u", response="r", rendered_prompt="u",
                      prompt_hash="0", tokens={"F": Usage(5, 5)})
    store.append_dialogue([turn], DialogueRecord(run_id="ref", dialogue_id="d9", dataset="mathmt",
                                                 method="original", n_turns=1, tokens={"F": Usage(5, 5)}))
    data = load_local(outputs / "tiny_exp", report_cfg)
    original = data.dialogues[data.dialogues["method"] == "original"]
    assert set(original["dialogue_id"]) == {"d1", "d2", "m1", "m2"}
    # scanned directly (no run points at it), the reference keeps all its dialogues
    alone = load_local(ref_dir, report_cfg)
    assert set(alone.dialogues["dialogue_id"]) == {"d1", "d2", "d9"}


def test_explicit_original_run_replaces_the_reference(outputs, report_cfg):
    ref_dir = outputs / "references" / "mathmt-tiny-0123456789"
    run_dir = outputs / "tiny_exp" / "tiny" / "mathmt" / "original"
    shutil.copytree(ref_dir, run_dir)
    header = json.loads((outputs / "tiny_exp" / "tiny" / "mathmt" / "surrogate" / "run.json").read_text())
    header["config"]["method"]["name"] = "original"
    (run_dir / "run.json").write_text(json.dumps(header))
    data = load_local(outputs / "tiny_exp", report_cfg)
    original = data.dialogues[(data.dialogues["method"] == "original") & (data.dialogues["dataset"] == "mathmt")]
    assert set(original["run_key"]) == {"tiny/mathmt/original"}
    assert len(original) == 2


def test_finished_only_leaves_out_a_run_still_running(outputs, report_cfg):
    """A long study reported while a method still runs: with report.finished_only=true its
    partial run is left out and named in the warnings (not mixed in at a smaller n)."""
    header_path = outputs / "tiny_exp" / "tiny" / "mathmt" / "surrogate" / "run.json"
    header = json.loads(header_path.read_text())
    header_path.write_text(json.dumps({**header, "status": "running"}))
    everything = load_local(outputs / "tiny_exp", report_cfg)
    assert "tiny/mathmt/surrogate" in {r.key for r in everything.runs}
    report_cfg.finished_only = True
    finished = load_local(outputs / "tiny_exp", report_cfg)
    assert "tiny/mathmt/surrogate" not in {r.key for r in finished.runs}
    assert len([r for r in finished.runs if r.kind == "run"]) == 4
    assert any("tiny/mathmt/surrogate: left out" in w and "status running" in w
               for w in finished.warnings)


def test_sweep_variants_get_their_differing_keys_as_labels(outputs_with_sweep, report_cfg):
    data = load_local(outputs_with_sweep / "ww" / "multirun", report_cfg)
    labels = sorted({r.label for r in data.runs if r.kind == "run"})
    assert labels == ["SOMA (switch.warm_window=1)", "SOMA (switch.warm_window=2)", "SOMA (switch.warm_window=3)"]
    assert all(r.variant == {"method.switch.warm_window": int(r.label[-2])} for r in data.runs)
    # runs differing only in dataset (and seed) are the same row
    main = load_local(outputs_with_sweep / "tiny_exp", report_cfg)
    assert {r.label for r in main.runs if r.method == "soma"} == {"SOMA"}


def test_duplicate_dialogues_are_counted_once_and_reported(outputs, report_cfg):
    src = outputs / "tiny_exp" / "tiny" / "mathmt" / "surrogate"
    shutil.copytree(src, outputs / "again" / "tiny" / "mathmt" / "surrogate")
    data = load_local(outputs, report_cfg)
    surrogate = data.dialogues[(data.dialogues["label"] == "Surrogate") & (data.dialogues["dataset"] == "mathmt")]
    assert len(surrogate) == 2
    assert any("appear in more than one run" in w for w in data.warnings)
    scores = data.scores[(data.scores["label"] == "Surrogate") & (data.scores["dataset"] == "mathmt")]
    assert scores["run_key"].nunique() == 1


def test_find_run_dirs_skips_wandb_and_errors_are_clear(outputs, report_cfg, tmp_path):
    (outputs / "tiny_exp" / "tiny" / "mathmt" / "soma" / "wandb" / "x").mkdir(parents=True)
    (outputs / "tiny_exp" / "tiny" / "mathmt" / "soma" / "wandb" / "x" / "records.jsonl").write_text("")
    assert all("wandb" not in p.parts for p in find_run_dirs(outputs))
    with pytest.raises(ConfigError, match="does not exist"):
        load_local(tmp_path / "nope", report_cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no run directories"):
        load_local(tmp_path / "empty", report_cfg)


def test_parse_wandb_source():
    assert parse_wandb_source("wandb:team/proj/grp") == ("team", "proj", "grp")
    assert parse_wandb_source("wandb:team/proj") == ("team", "proj", None)
    with pytest.raises(ConfigError, match="wandb:<entity>/<project>/<group>"):
        parse_wandb_source("wandb:team")
