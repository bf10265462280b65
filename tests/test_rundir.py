"""The run-directory contract (somabench.rundir): one list of non-output keys shared by the
config hash, Hydra's sweep subdir names, the reference key and the judge panel; a rerun with
only transport or cache knobs changed resumes; a run that failed before serving anything does
not block a corrected rerun. Fast: the ``fake`` backend serves (control flow only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from somabench.config import compose, conf_dir
from somabench.errors import RunDirConflict
from somabench.reference import reference_key
from somabench.rundir import (
    RUN_HEADER,
    TRANSPORT_KEYS,
    config_hash,
    dirname_exclude_keys,
    is_non_output,
    read_header,
)
from somabench.task import run_task

FAKE = ["model.F.backend=testing.fake", "model.G.backend=testing.fake", "model.F.asset=null", "model.G.asset=null"]


def fake_overrides(tmp_path: Path) -> list[str]:
    return [*FAKE, "dataset=mathmt", "dataset.tiny=true", "limit=2", "judge=none",
            "method=original", "progress=false", "logger=csv",
            f"paths.output_root={tmp_path / 'outputs'}",
            f"cache.path={tmp_path / 'cache' / 'requests.sqlite'}"]


def run_dir(cfg) -> Path:  # noqa: ANN001
    return Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name


def test_hash_ignores_cache_transport_and_bookkeeping_but_not_outputs(tmp_path: Path) -> None:
    base = compose(fake_overrides(tmp_path))
    same = compose([*fake_overrides(tmp_path), "cache.enabled=false", "model.F.timeout=7",
                    "model.G.max_retries=1", "progress=true", "judge=embedding", "limit=1",
                    "fail_on_error=0.5"])
    assert config_hash(base) == config_hash(same)
    for changed in ("generation.max_new_tokens=3", "seed=1", "history=reference",
                    "model.F.model_id=other"):
        assert config_hash(compose([*fake_overrides(tmp_path), changed])) != config_hash(base), changed


def test_hydra_exclude_keys_are_the_non_output_keys() -> None:
    hydra_cfg = yaml.safe_load((conf_dir() / "hydra" / "default.yaml").read_text())
    exclude = hydra_cfg["job"]["config"]["override_dirname"]["exclude_keys"]
    assert exclude == dirname_exclude_keys()
    assert all(is_non_output(k) for k in exclude if not k.startswith("hydra."))
    assert is_non_output("shard")  # selection, not output; it still names its own subdir
    assert "shard" not in exclude and "run_name" not in exclude


def test_reference_key_and_panel_share_the_transport_list(tmp_path: Path) -> None:
    from somabench.judges.panel import PANEL_KEYS

    assert set(TRANSPORT_KEYS) <= set(PANEL_KEYS)
    base = compose(fake_overrides(tmp_path))
    moved = compose([*fake_overrides(tmp_path), *(f"model.F.{k}=3" for k in TRANSPORT_KEYS)])
    assert reference_key(base) == reference_key(moved)
    assert reference_key(base) != reference_key(
        compose([*fake_overrides(tmp_path), "generation.max_new_tokens=3"]))


def test_rerun_with_cache_off_and_new_timeout_resumes(tmp_path: Path) -> None:
    cfg = compose(fake_overrides(tmp_path))
    run_task(cfg)
    out = run_dir(cfg)
    records = (out / "records.jsonl").read_text()
    first = read_header(out)
    assert first["status"] == "success"
    again = compose([*fake_overrides(tmp_path), "cache.enabled=false", "model.F.timeout=3"])
    run_task(again)  # would raise RunDirConflict if the hash moved
    assert (out / "records.jsonl").read_text() == records  # nothing served twice
    header = read_header(out)
    assert header["config_hash"] == first["config_hash"] and header["status"] == "success"
    assert header["started"] == first["started"]


def test_failed_before_serving_does_not_block_a_corrected_rerun(tmp_path: Path) -> None:
    from somabench.data import DatasetError

    bad = compose([*fake_overrides(tmp_path), "dataset.tasks=[zzz]"])
    with pytest.raises(DatasetError, match="zzz"):
        run_task(bad)
    out = run_dir(bad)
    assert read_header(out)["status"] == "error"
    good = compose(fake_overrides(tmp_path))
    run_task(good)  # a different config takes over the dir: nothing was served there
    header = read_header(out)
    assert header["status"] == "success" and header["config_hash"] == config_hash(good)
    # Once records exist, another config is refused (and the header is left as it was).
    other = compose([*fake_overrides(tmp_path), "generation.max_new_tokens=3"])
    with pytest.raises(RunDirConflict, match="different config"):
        run_task(other)
    assert json.loads((out / RUN_HEADER).read_text())["config_hash"] == config_hash(good)
