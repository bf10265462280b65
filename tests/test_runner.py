"""End to end on the real tiny models: records, token counts, resume after a crash, batching."""

from __future__ import annotations

from pathlib import Path

import pytest

from somabench.backends.hf import HFBackend
from somabench.config import compose
from somabench.records import RecordStore, load_dialogues, load_turns
from somabench.task import run_task


class CallCounter:
    """Counts real model calls (HFBackend.generate_text) across a run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = HFBackend.generate_text
        counter = self

        def counting(self_backend, prompts, gen, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            counter.calls += len(prompts)
            return original(self_backend, prompts, gen, *args, **kwargs)

        monkeypatch.setattr(HFBackend, "generate_text", counting)


def run_dir(cfg) -> Path:  # noqa: ANN001
    return Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name


def test_original_two_turns_records_and_token_counts(tiny_cfg_overrides, tiny_assets) -> None:
    cfg = compose(tiny_cfg_overrides + ["method=original"])
    run_task(cfg)
    turns = load_turns(run_dir(cfg))
    assert [t.turn for t in turns] == [0, 1]
    assert all(t.served_by == "F" and t.status == "ok" and t.response for t in turns)
    # token counts come from F's own tokenizer over exactly the rendered prompt
    backend = HFBackend(model_id=cfg.model.F.model_id, path=str(tiny_assets["qwen2.5-coder-0.5b-instruct"]))
    for t in turns:
        assert t.tokens["F"].prompt == backend.count_tokens(t.rendered_prompt)
        assert 0 < t.tokens["F"].completion <= cfg.generation.max_new_tokens
        assert "<|im_start|>user" in t.rendered_prompt and t.user in t.rendered_prompt
        assert t.throughput_tps and t.throughput_tps > 0
    # turn 2 sees turn 1's answer (history: own)
    assert turns[0].response in turns[1].rendered_prompt
    [dialogue] = load_dialogues(run_dir(cfg))
    assert dialogue.tokens["F"].prompt == sum(t.tokens["F"].prompt for t in turns)
    assert (run_dir(cfg) / "summary.md").read_text().count("original") >= 1
    assert (run_dir(cfg) / "run.json").exists()


def test_resume_after_crash_repeats_no_model_call(tiny_cfg_overrides, tiny_assets,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = tiny_cfg_overrides + ["method=surrogate", "limit=2"]
    cfg = compose(overrides)
    appended = {"n": 0}
    real_append = RecordStore.append_dialogue

    def crash_on_second(self, turns, dialogue):  # noqa: ANN001, ANN202
        appended["n"] += 1
        if appended["n"] == 2:
            raise KeyboardInterrupt("injected crash while writing dialogue 2")
        return real_append(self, turns, dialogue)

    monkeypatch.setattr(RecordStore, "append_dialogue", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_task(cfg)
    assert len(load_dialogues(run_dir(cfg))) == 1
    monkeypatch.setattr(RecordStore, "append_dialogue", real_append)

    counter = CallCounter(monkeypatch)
    run_task(compose(overrides))
    assert counter.calls == 0, "resume regenerated answers that the cache already had"
    turns = load_turns(run_dir(cfg))
    keys = [(t.dialogue_id, t.turn) for t in turns]
    assert len(keys) == len(set(keys)) == 4
    resumed = {(t.dialogue_id, t.turn): t for t in turns}
    assert sum(t.cached for t in turns) == 2  # dialogue 2 came back from the cache
    # a clean run into another dir gives the same answers
    clean = compose(overrides + ["task_name=clean"])
    run_task(clean)
    for t in load_turns(run_dir(clean)):
        assert resumed[(t.dialogue_id, t.turn)].response == t.response
        assert resumed[(t.dialogue_id, t.turn)].tokens == t.tokens


def test_batched_generation_matches_one_by_one(tiny_cfg_overrides, tiny_assets) -> None:
    common = tiny_cfg_overrides + ["method=surrogate", "limit=3", "cache.enabled=false",
                                          "model.G.dtype=float32"]
    one = compose(common + ["task_name=b1", "batch_size=1"])
    many = compose(common + ["task_name=b3", "batch_size=3"])
    run_task(one)
    run_task(many)
    a = {(t.dialogue_id, t.turn): t for t in load_turns(run_dir(one))}
    b = {(t.dialogue_id, t.turn): t for t in load_turns(run_dir(many))}
    assert a.keys() == b.keys()
    assert any(t.batch_size == 3 for t in b.values())
    for key in a:
        assert a[key].response == b[key].response
        assert a[key].tokens == b[key].tokens


def test_resume_on_a_machine_with_another_dtype_is_refused(tmp_path: Path) -> None:
    """dtype auto resolves per machine; a resumed run must not mix bf16 and fp32 answers."""
    from types import SimpleNamespace

    from somabench.errors import RunDirConflict
    from somabench.rundir import DIALOGUES_FILE, RunHeader, read_header, write_header
    from somabench.task import dtype_guard, models_recorder

    def backend(dtype: str) -> SimpleNamespace:
        return SimpleNamespace(describe=lambda: {"engine": "transformers", "dtype": dtype,
                                                 "dtype_reason": f"auto: probe chose {dtype}"})

    recorded = {"G": {"dtype": "bfloat16"}}
    guard = dtype_guard(tmp_path, recorded)
    guard("G", backend("float32"))  # nothing served yet: nothing to protect
    (tmp_path / DIALOGUES_FILE).write_text('{"dialogue_id": "d1"}\n')
    guard("G", backend("bfloat16"))  # same dtype: resumes
    guard("F", backend("float32"))  # F was never recorded (a method that never used it)
    with pytest.raises(RunDirConflict, match=r"G in bfloat16 .* here G loads in float32"):
        guard("G", backend("float32"))

    write_header(tmp_path, RunHeader(status="started"))
    ctx = SimpleNamespace(describe_models=lambda: {"G": backend("bfloat16").describe()})
    models_recorder(tmp_path, ctx)("G", None)
    header = read_header(tmp_path)
    assert header is not None
    assert header.status == "started" and header.models["G"]["dtype"] == "bfloat16"


def test_shared_objects_are_built_once_and_closed_with_the_run(tmp_path: Path) -> None:
    """``RunContext.shared``: one object per key for the whole run (e.g. the G_serve engine),
    None before it is built, and its ``close()`` called when the run's context closes."""
    from somabench.runner import RunContext

    class Engine:
        built = 0
        closed = 0

        def __init__(self) -> None:
            Engine.built += 1

        def close(self) -> None:
            Engine.closed += 1

    ctx = RunContext(compose(["model.F.backend=testing.fake", "model.G.backend=testing.fake",
                              f"cache.path={tmp_path / 'c.sqlite'}"]))
    assert ctx.shared("engine") is None
    first = ctx.shared("engine", Engine)
    assert ctx.shared("engine", Engine) is first and ctx.shared("engine") is first
    assert Engine.built == 1 and Engine.closed == 0
    ctx.close()
    assert Engine.closed == 1


def test_restored_seconds_count_in_latency_and_end_to_end(tmp_path: Path) -> None:
    """A plan that restored cached work (``records.RESTORED_SECONDS``, e.g. an adapter-cache
    hit) waits as if the work had been done in its turn step: its own queue and every later call
    of the step include the seconds, and the turn's end-to-end seconds count them once."""
    from somabench.data import load_dialogues as load_data
    from somabench.methods import Method, Session, TurnPlan
    from somabench.metrics import turn_seconds_e2e
    from somabench.records import RESTORED_SECONDS
    from somabench.runner import RunContext, Runner

    class Restoring(Method):
        name = "restoring"

        def plan(self, session: Session, turn: int) -> TurnPlan:
            plan = TurnPlan(role="F", messages=session.full_messages(turn, session.history))
            if turn == 1 and session.id == first:
                plan.seconds[RESTORED_SECONDS] = 100.0
            return plan

    cfg = compose(["model.F.backend=testing.fake", "model.G.backend=testing.fake", "judge=none",
                   "dataset=mathmt", "limit=2", "dataset.truncate_turns=2", "progress=false",
                   f"paths.output_root={tmp_path}", f"cache.path={tmp_path / 'c.sqlite'}"])
    dialogues = load_data(cfg.dataset, limit=2, seed=0)
    first = dialogues[0].id
    ctx = RunContext(cfg)
    store = RecordStore(tmp_path / "run")
    runner = Runner(cfg, ctx, Restoring(cfg.method, ctx), store, run_id="run", reference=None,
                    reference_key=None, history_mode="own")
    runner.serve(dialogues, batch_size=2)
    turns = {(t.dialogue_id, t.turn): t for t in load_turns(tmp_path / "run")}
    for (dialogue, turn), record in turns.items():
        waited = record.seconds["queue"]
        assert (waited >= 100.0) is (turn == 1), (dialogue, turn)  # both dialogues of the step wait
        assert waited < 200.0  # counted once per step
    restored = turns[(first, 1)]
    assert turn_seconds_e2e(restored.seconds) >= 100.0
    assert turn_seconds_e2e(turns[(dialogues[1].id, 1)].seconds) < 100.0  # only its own work
