"""The resolved dtype and its reason reach run.json (``models.<role>``), on a real tiny run."""

from __future__ import annotations

import json
from pathlib import Path

from somabench import dtype as dtypes
from somabench.config import compose
from somabench.task import run_task

# G alone answers (method=surrogate): one SmolLM2 turn of 2 tokens is the cheapest real run.
ONE_TURN = ["method=surrogate", "dataset.truncate_turns=1", "generation.max_new_tokens=2",
            "cache.enabled=false"]


def _models(cfg) -> dict:  # noqa: ANN001
    header = Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name / "run.json"
    return json.loads(header.read_text())["models"]


def test_run_json_records_resolved_dtype_and_explicit_override(tiny_cfg_overrides,
                                                                tiny_assets) -> None:
    auto = compose(tiny_cfg_overrides + ONE_TURN + ["task_name=auto"])
    run_task(auto)
    g = _models(auto)["G"]
    expected = dtypes.resolve("auto", "cpu", auto.paths.cache_dir)
    assert g["dtype"] == expected.name and g["dtype_reason"].startswith("auto: ")
    assert g["dtype_requested"] == "auto" and g["engine"] == "transformers"
    assert "F" not in _models(auto)  # never loaded by this method: absent, not guessed

    explicit = compose(tiny_cfg_overrides + ONE_TURN + ["task_name=explicit",
                                                        "model.G.dtype=float32"])
    run_task(explicit)
    g = _models(explicit)["G"]
    assert g["dtype"] == "float32" and g["dtype_reason"].startswith("explicit")
