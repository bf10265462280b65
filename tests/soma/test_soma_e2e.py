"""method=soma end to end on the real tiny models (F = Qwen2.5-Coder-0.5B, G = SmolLM2-135M)."""

from __future__ import annotations

from pathlib import Path

import pytest

from somabench.config import compose
from somabench.records import load_dialogues, load_turns
from somabench.task import run_task

# The smallest dialogue that can switch: W=2 warm + m=2 gate turns + 1 G turn. Mining and LoRA
# are shrunk (2 candidates, 2 steps, 1 epoch) so the test exercises every stage quickly; the
# gate threshold is fixed below any cosine so the switch is deterministic (calibration itself
# is tested in test_switching.py).
SMALL = ["method=soma", "dataset.tasks=[math]", "dataset.truncate_turns=5",
         "method.soft_prompt.n_candidates=2", "method.mining.steps=2", "method.lora.epochs=1",
         "method.mining.max_context_tokens=96", "method.mining.max_answer_tokens=8",
         "method.lora.max_seq_tokens=128", "method.switch.gate.threshold=-1.0",
         "method.switch.drift.enabled=false"]


@pytest.mark.slow
def test_soma_one_dialogue_switches_and_records_costs(tiny_cfg_overrides, tiny_assets) -> None:
    cfg = compose(tiny_cfg_overrides + SMALL)
    run_task(cfg)
    run_dir = Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name
    turns = sorted(load_turns(run_dir), key=lambda t: t.turn)
    assert [t.served_by for t in turns] == ["F", "F", "F", "F", "G+lora"]
    assert [t.gate["phase"] for t in turns] == ["warm", "warm", "gate", "gate", "switched"]
    assert turns[2].gate["hits"] == 1 and turns[3].gate["switched"]
    assert turns[3].gate["switch_turn"] == 3 and turns[2].extra["candidate"] is not None
    last = turns[4]
    assert last.context["verbatim_turns"] == 1 and last.context["summarized_turns"] == 3
    assert 0 < last.context["summary_tokens"] <= cfg.method.summary.budget_tokens
    assert "Summary of the earlier conversation" in last.rendered_prompt
    assert turns[0].response not in last.rendered_prompt or last.context["summary"]
    [dialogue] = load_dialogues(run_dir)
    a = dialogue.adaptation
    for key in ("mining_s", "f_queries_s", "lora_s", "gate_s", "seconds_total", "mining_cpu_s"):
        assert a[key] > 0, key
    assert a["mining_steps"] == 2 and a["lora_steps"] > 0 and set(a["hardness"]) == {"0", "1"}
    assert a["knobs"]["M"] == 2 and a["knobs"]["W"] == 2 and a["knobs"]["theory"]["M"] == 3
    assert len(a["verbalized"]) == 2 and a["f_queries"] == 4
    assert a["lora_examples"] == 6 and a["lora_examples_mined"] == 4
    assert a["adapter_id"].startswith("lora-")
    assert a["switch"]["switch_turn"] == 3
    f_adapt = dialogue.adaptation_tokens["F"]
    assert f_adapt.prompt > 0 and f_adapt.completion > 0
    served_f = sum(t.tokens["F"].prompt for t in turns if "F" in t.tokens)
    assert dialogue.tokens["F"].prompt == served_f + f_adapt.prompt  # adaptation counted
    assert dialogue.adaptation_tokens["G"].prompt > 0  # gate candidates
