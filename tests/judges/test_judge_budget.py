"""Reasoning judges: per-judge token budget, finish_reason in score lines, a reply cut off by the
limit is ``truncated`` (never cached, re-asked), and a cached ``unparsed`` respects parse_retries.

The judge's transport is replaced by a scripted chat object (what a model would reply and why it
stopped); the judge logic under test -- budget, parser, status, cache -- is the real one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from somabench.backends.base import Completion
from somabench.cache import SqliteCache
from somabench.judges.base import JudgeItem
from somabench.judges.llm_judge import ModelJudge
from somabench.judges.prompting import load_prompt

PANEL = {"parse_retries": 1, "timeout": 5, "max_retries": 0, "backoff_initial": 0.01, "backoff_max": 0.01,
         "concurrency": 1}
SETTINGS = {"context_turns": 0, "max_tokens": 16, "stop": []}


class Scripted:
    """Replies (text, finish_reason) in order; records the budget each call had."""

    def __init__(self, *replies: tuple[str, str]) -> None:
        self.replies = list(replies)
        self.budgets: list[int] = []

    def chat(self, messages, gen):  # noqa: ANN001 - the backend protocol
        self.budgets.append(gen.max_new_tokens)
        text, finish = self.replies.pop(0)
        return Completion(text=text, prompt_tokens=10, completion_tokens=gen.max_new_tokens, seconds=0.01,
                          rendered_prompt="", model_id="m", finish_reason=finish)


def _judge(tmp_path: Path, scripted: Scripted, parse_retries: int = 1, **spec) -> ModelJudge:
    cache = SqliteCache(tmp_path / "cache.sqlite", namespace="judge")
    judge = ModelJudge("gpt_oss", {"kind": "local", "model": "m", **spec},
                       {**PANEL, "parse_retries": parse_retries}, cache)
    judge._backend = scripted
    return judge


ITEM = JudgeItem(run_id="r", dialogue_id="d", dataset="x", turn=0, method="m", served_by="G",
                 question="q?", candidate="a", reference="b", context=[], post_switch=False,
                 reference_turn_ref=None)


def test_reply_cut_off_by_the_limit_is_truncated_and_not_cached(tmp_path):
    prompt = load_prompt("similarity_v1")
    # parse_retries=1: the reminder is tried once, the last reply is cut off again
    scripted = Scripted(("", "length"), ("Let me think about", "length"), ("0.8", "stop"))
    judge = _judge(tmp_path, scripted)
    first = judge.judge(ITEM, prompt, SETTINGS)
    assert first.status == "truncated" and first.finish_reason == "length" and first.score is None
    assert "max_tokens=16" in first.error and first.attempts == 2
    again = judge.judge(ITEM, prompt, SETTINGS)  # not cached as final: asked again
    assert again.status == "ok" and again.score == 0.8 and not again.cached
    assert judge.judge(ITEM, prompt, SETTINGS).cached  # an ok verdict is


def test_per_judge_budget_and_reasoning_controls_change_the_request(tmp_path):
    prompt = load_prompt("similarity_v1")
    plain = _judge(tmp_path, Scripted(("0.5", "stop")))
    budget = _judge(tmp_path, Scripted(("0.5", "stop")), max_tokens=1024,
                    extra_body={"reasoning": {"effort": "low"}})
    assert budget.request(ITEM, prompt, SETTINGS)[1].max_new_tokens == 1024
    assert plain.request(ITEM, prompt, SETTINGS)[1].max_new_tokens == 16
    assert budget.request_key(ITEM, prompt, SETTINGS) != plain.request_key(ITEM, prompt, SETTINGS)
    budget.judge(ITEM, prompt, SETTINGS)
    assert budget._backend.budgets == [1024]


def test_cached_unparsed_respects_parse_retries(tmp_path):
    prompt = load_prompt("similarity_v1")
    first = _judge(tmp_path, Scripted(("no idea", "stop")), parse_retries=0)
    verdict = first.judge(ITEM, prompt, SETTINGS)
    assert verdict.status == "unparsed" and verdict.parse_retries == 0
    same = _judge(tmp_path, Scripted(), parse_retries=0)
    assert same.judge(ITEM, prompt, SETTINGS).cached  # final for 0 retries
    more = _judge(tmp_path, Scripted(("still no", "stop"), ("0.4", "stop")), parse_retries=1)
    retried = more.judge(ITEM, prompt, SETTINGS)
    assert not retried.cached and retried.status == "ok" and retried.score == 0.4


@pytest.mark.parametrize(("old", "wanted"), [({"status": "unparsed", "parse_retries": 0}, True),
                                             ({"status": "unparsed", "parse_retries": 2}, False),
                                             ({"status": "unparsed"}, True),
                                             ({"status": "ok", "parse_retries": 0}, False)])
def test_score_lines_made_with_fewer_retries_are_rejudged(old, wanted):
    from somabench.judges.panel import _wants_more_retries

    class J:
        parse_retries = 2

    assert _wants_more_retries(old, J()) is wanted


def test_local_judge_key_holds_the_resolved_dtype(tmp_path, monkeypatch):
    """``dtype: auto`` is resolved in the cache key, so verdicts computed in bf16 on one machine
    are never served to an fp32 machine (and an explicit dtype keys as itself)."""
    from somabench import dtype as dtypes

    monkeypatch.setattr(dtypes, "resolve", lambda requested, device="cpu", cache_dir=None:
                        dtypes.DtypeChoice("float32" if requested == "auto" else requested,
                                           "test", requested))
    auto = _judge(tmp_path, Scripted(), dtype="auto").fingerprint()
    explicit = _judge(tmp_path, Scripted(), dtype="bfloat16").fingerprint()
    assert auto["dtype"] == "float32" and explicit["dtype"] == "bfloat16"
    assert _judge(tmp_path, Scripted()).fingerprint()["dtype"] is None
