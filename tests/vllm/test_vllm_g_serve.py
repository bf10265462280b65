"""A real run whose post-switch G+LoRA turns are served by vLLM (``+model/G_serve=vllm``).

History-FT on one 5-turn dialogue of the tiny family, with the switch forced (a fixed gate
threshold below any cosine, one hit, no acceptance test, no drift) so that turns 3-4 are
post-switch: the hook in ``SwitchingMethod.plan`` must send them to the G_serve engine with the
dialogue's adapter, and ``finish`` must take the adapter out of the engine again.
The run builds its G_serve engine through ``SessionAdapterServer.from_cfg``; the test hands it
the session's engine (same model, same settings) instead of loading a second one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="needs vLLM: make vllm-env, then make test-vllm")
pytestmark = pytest.mark.vllm

FORCED_SWITCH = [
    "method.switch.warm_window=2", "method.switch.gate.threshold=-1.0",
    "method.switch.gate.consecutive_hits=1", "method.switch.acceptance.enabled=false",
    "method.switch.drift.enabled=false", "method.train.max_steps=2",
]


def test_post_switch_turns_are_served_by_vllm_with_the_session_adapter(
        engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from somabench.config import compose
    from somabench.switching import vllm_serving
    from somabench.task import run_dir_of, run_task

    built: list[Any] = []
    closed: list[bool] = []

    class SharedEngine:
        """The session's engine; the run's ``close()`` is recorded, not executed (later tests
        still use the engine)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(engine, name)

        def close(self) -> None:
            closed.append(True)

    def from_cfg(cfg: Any, cache: Any = None) -> Any:
        assert cfg.model.G_serve.enable_lora and cfg.model.G_serve.model_id == cfg.model.G.model_id
        server = vllm_serving.SessionAdapterServer(SharedEngine(), tmp_path / "adapters", cache)
        built.append(server)
        return server

    monkeypatch.setattr(vllm_serving.SessionAdapterServer, "from_cfg", staticmethod(from_cfg))
    cfg = compose([
        "model=tiny", "dataset=mathmt", "dataset.min_turns=5", "dataset.truncate_turns=5",
        "limit=1", "method=history_ft", "+model/G_serve=vllm", "model.G.dtype=float32",
        "generation.max_new_tokens=8", "judge=none", "progress=false",
        f"paths.output_root={tmp_path / 'outputs'}", f"cache.path={tmp_path / 'requests.sqlite'}",
        *FORCED_SWITCH,
    ])
    run_task(cfg)
    records = [json.loads(x) for x in (run_dir_of(cfg) / "records.jsonl").read_text().splitlines()]
    assert [r["served_by"] for r in records] == ["F", "F", "F", "G+lora", "G+lora"]
    served = records[3:]
    adapter_ids = {r["extra"]["g_serve"]["adapter_id"] for r in served}
    assert len(adapter_ids) == 1 and next(iter(adapter_ids))
    assert all(r["extra"]["g_serve"]["engine"] == f"vllm ({engine.device})" for r in served)
    assert all(r["status"] == "ok" and r["tokens"]["G"]["completion"] for r in served)
    assert len(built) == 1 and closed == [True]  # one engine for the run, closed at its end
    assert not built[0].engine.adapters  # released when the dialogue finished
    assert not any((tmp_path / "adapters").iterdir())  # and its exported copy deleted
