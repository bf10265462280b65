"""The LLM judge against a REAL OpenAI-compatible server on 127.0.0.1 (somabench.serve).

Script mode answers from a list of behaviours over real HTTP (rate limits, timeouts, unreadable
replies, a server that goes away); backend mode serves the real SmolLM2 model. Call counts come
from the server's own ``/stats``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.servers import serve_in_thread, server_stats
from tests.judges.conftest import panel_cfg

from somabench.judges.base import JudgeError
from somabench.judges.panel import SCORES_FILE, judge_run
from somabench.records import load_turns
from somabench.testing.scripted import Behavior

ANSWERS = {"d1": ["four", "twelve"], "d2": ["six", "ten"]}
REFS = {"d1": ["4", "12"], "d2": ["6", "10"]}


def scores(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / SCORES_FILE).read_text().splitlines()]


def chat_calls(server) -> int:  # noqa: ANN001
    return int(server_stats(server)["chat_requests"])


def test_happy_path_records_scores_tokens_and_audit_fields(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers=ANSWERS, references=REFS)
    with serve_in_thread(default=Behavior.reply("0.75")) as server:
        objective = judge_run(panel_cfg(tmp_path, server), run_dir)
        assert chat_calls(server) == 4
        request = server.requests[0]
    assert request["temperature"] == 0.0 and request["max_tokens"] == 16
    assert "Reference Solution:\n4\nCandidate Answer:\nfour" in request["messages"][0]["content"]
    assert objective == pytest.approx(75.0)
    lines = scores(run_dir)
    assert len(lines) == 4
    for row in lines:
        assert row["status"] == "ok" and row["score"] == 0.75 and row["score_norm"] == 0.75
        assert row["judge"] == "scripted" and row["judge_kind"] == "llm"
        assert row["judge_model"] == "scripted-echo" and row["prompt_id"] == "similarity_v1"
        assert row["attempts"] == 1 and row["cached"] is False and row["post_switch"] is False
        # script mode's usage counts words; what matters: the server's usage reaches the line
        assert row["tokens"]["completion"] == 1 and row["tokens"]["prompt"] > 100
        assert row["messages"][0]["content"].endswith("Score:") and row["raw"] == "0.75"
        assert row["request_key"] and row["prompt_sha"]
    summary = (run_dir / "judge_summary.md").read_text()
    assert "panel:paper" in summary and "75.0" in summary
    assert (run_dir / "judge_summary.csv").exists() and (run_dir / "judge.json").exists()


def test_garbage_answers_are_unparsed_with_raw_text_never_zero(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers={"d1": ["four"]}, references={"d1": ["4"]})
    script = [Behavior.reply("I think the candidate is quite good."),
              Behavior.reply("Very similar!")]
    with serve_in_thread(script=script) as server:
        objective = judge_run(panel_cfg(tmp_path, server, parse_retries=1), run_dir)
        assert chat_calls(server) == 2
        retry = server.requests[1]["messages"]
    # the retry shows the judge its own reply and the prompt's reminder
    assert retry[-2] == {"role": "assistant", "content": "I think the candidate is quite good."}
    assert "Reply with only a single number" in retry[-1]["content"]
    [row] = scores(run_dir)
    assert row["status"] == "unparsed" and row["score"] is None and row["score_norm"] is None
    assert row["raw"] == "Very similar!" and row["attempts"] == 2
    assert "quite good" in row["retries"][0] and "not a single number" in row["error"]
    assert objective is None  # no number was invented
    summary = (run_dir / "judge_summary.csv").read_text()
    assert "1.0" in summary  # unparsed share 1.0 for the judge


def test_unreadable_then_valid_after_reminder(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers={"d1": ["four"]}, references={"d1": ["4"]})
    with serve_in_thread(script=[Behavior.reply("Score: high"), Behavior.reply("0.9")]) as server:
        judge_run(panel_cfg(tmp_path, server, parse_retries=1), run_dir)
    [row] = scores(run_dir)
    assert row["status"] == "ok" and row["score"] == 0.9 and row["attempts"] == 2


def test_rate_limit_then_success_is_retried(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers={"d1": ["four"]}, references={"d1": ["4"]})
    script = [Behavior.error(429, retry_after=0.01), Behavior.error(503), Behavior.reply("0.5")]
    with serve_in_thread(script=script) as server:
        judge_run(panel_cfg(tmp_path, server, max_retries=2), run_dir)
        stats = server_stats(server)
    assert stats["chat_requests"] == 3 and stats["by_status"] == {"429": 1, "503": 1, "200": 2}  # GET /models + the success
    [row] = scores(run_dir)
    assert row["status"] == "ok" and row["score"] == 0.5 and row["attempts"] == 3
    assert "429" in row["retries"][0] and "503" in row["retries"][1]


def test_timeout_is_an_api_error_then_rerun_succeeds(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers={"d1": ["four"]}, references={"d1": ["4"]})
    with serve_in_thread(script=[Behavior.sleep(3.0, "0.5"), Behavior.sleep(3.0, "0.5")],
                         default=Behavior.reply("0.6")) as server:
        cfg = panel_cfg(tmp_path, server, timeout=0.3, max_retries=1)
        with pytest.raises(JudgeError, match="timed out") as info:
            judge_run(cfg, run_dir)
        assert "rerun" in str(info.value)
        [row] = scores(run_dir)
        assert row["status"] == "api_error" and row["score"] is None and row["attempts"] == 2
        assert "timed out after 0.3s" in row["error"]
        judge_run(cfg, run_dir)  # the failed line is judged again, not kept
    [row] = scores(run_dir)
    assert row["status"] == "ok" and row["score"] == 0.6


def test_server_down_before_start_is_a_clear_error(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers={"d1": ["four"]}, references={"d1": ["4"]})
    with serve_in_thread() as server:
        base_url = server.base_url
    with pytest.raises(JudgeError, match="cannot reach") as info:
        judge_run(panel_cfg(tmp_path, base_url=base_url, model="scripted-echo"), run_dir)
    assert "python -m somabench serve" in str(info.value)
    assert "judge.judges.scripted.base_url" in str(info.value)
    assert not (run_dir / SCORES_FILE).exists() or not scores(run_dir)
    assert len(load_turns(run_dir)) == 1  # the run itself is untouched


def test_server_dies_mid_run_keeps_finished_lines_and_resumes(tmp_path: Path, make_run) -> None:
    answers = {f"d{i}": ["a", "b"] for i in range(4)}
    run_dir = make_run(answers=answers, references={k: ["A", "B"] for k in answers})
    # 1 preflight GET + 3 chats, then the server shuts itself down
    with serve_in_thread(default=Behavior.reply("0.8"), max_requests=4) as server:
        cfg = panel_cfg(tmp_path, server, max_retries=1, abort_after_consecutive_errors=2)
        with pytest.raises(JudgeError) as info:
            judge_run(cfg, run_dir)
    rows = scores(run_dir)
    n_ok = [r["status"] for r in rows].count("ok")
    # the bound stops the server after the 4th request; one more may slip in while it stops
    assert n_ok in (3, 4)
    message = str(info.value)
    assert f"{8 - n_ok} of 8 call(s) failed" in message and "connection" in message
    assert "kept in" in message and "python -m somabench judge" in message
    failed = [r for r in rows if r["status"] == "api_error"]
    assert len(failed) == 8 - n_ok and all(r["score"] is None for r in failed)
    # the circuit breaker: after 2 failures in a row the rest is not attempted
    assert sum(r["attempts"] > 0 for r in failed) == 2
    assert sum("not attempted" in r["error"] for r in failed) == 8 - n_ok - 2
    assert len(load_turns(run_dir)) == 8
    # the server is back (same address): only the failed lines are judged again
    port = int(cfg.judge.judges.scripted.base_url.rsplit(":", 1)[1].split("/")[0])
    with serve_in_thread(default=Behavior.reply("0.4"), port=port) as server:
        judge_run(cfg, run_dir)
        assert chat_calls(server) == 8 - n_ok
    rows = scores(run_dir)
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    assert sorted(r["score"] for r in rows) == [0.4] * (8 - n_ok) + [0.8] * n_ok


def test_cache_hit_on_rerun_makes_zero_calls(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers=ANSWERS, references=REFS)
    with serve_in_thread(default=Behavior.reply("0.7")) as server:
        cfg = panel_cfg(tmp_path, server)
        first = judge_run(cfg, run_dir)
        assert chat_calls(server) == 4
        # resume: every line is already in scores.jsonl -> no call at all
        assert judge_run(cfg, run_dir) == first
        assert chat_calls(server) == 4
        # scores.jsonl lost: the sqlite judge cache answers everything
        (run_dir / SCORES_FILE).unlink()
        assert judge_run(cfg, run_dir) == first
        assert chat_calls(server) == 4
    rows = scores(run_dir)
    assert all(r["cached"] and r["attempts"] == 0 and r["status"] == "ok" for r in rows)


def test_cache_key_covers_model_and_messages_not_transport(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers={"d1": ["four", "twelve"]}, references={"d1": ["4", "12"]})
    with serve_in_thread(default=Behavior.reply("0.7")) as server:
        judge_run(panel_cfg(tmp_path, server), run_dir)
        assert chat_calls(server) == 2

        def rejudge(ctx: int | None = None, **knobs) -> int:  # noqa: ANN003
            (run_dir / SCORES_FILE).unlink()
            cfg = panel_cfg(tmp_path, server, **knobs)
            if ctx is not None:
                cfg.judge.prompt_settings.similarity.context_turns = ctx
            judge_run(cfg, run_dir)
            return chat_calls(server)

        # transport and retry knobs do not change a judgment: all cached
        assert rejudge(parse_retries=0, concurrency=3, timeout=9.0) == 2
        # the dialogue context changes turn 1's messages only: one new call
        assert rejudge(ctx=1) == 3
        # another judge model: every judgment is new
        assert rejudge(model="another-model", preflight=False) == 5


def test_concurrency_limit_is_respected(tmp_path: Path, make_run) -> None:
    answers = {f"d{i}": ["a", "b"] for i in range(6)}
    run_dir = make_run(answers=answers, references={k: ["A", "B"] for k in answers})
    with serve_in_thread(default=Behavior.sleep(0.2, "0.5")) as server:
        judge_run(panel_cfg(tmp_path, server, concurrency=4), run_dir)
        stats = server_stats(server)
    assert stats["chat_requests"] == 12 and 2 <= stats["max_in_flight"] <= 4


def test_ability_prompt_over_the_dialogue(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers={"d1": ["four", "twelve"]}, references={"d1": ["4", "12"]})
    with serve_in_thread(default=Behavior.reply("Recalls the earlier result. Rating: [[8]]")) as server:
        cfg = panel_cfg(tmp_path, server)
        cfg.judge.prompts = ["similarity_v1", "ability_memory_v1"]
        judge_run(cfg, run_dir)
        bodies = server.requests
    ability = [r for r in scores(run_dir) if r["prompt_id"] == "ability_memory_v1"]
    assert [r["score"] for r in ability] == [8.0, 8.0]
    assert all(r["score_norm"] == 0.8 and r["metric"] == "ability_memory" for r in ability)
    similarity = [r for r in scores(run_dir) if r["prompt_id"] == "similarity_v1"]
    assert all(r["status"] == "unparsed" for r in similarity)  # prose is not a lone number
    turn1 = [b for b in bodies if "Context memory" in b["messages"][-1]["content"]
             and "question 1" in b["messages"][-1]["content"]][0]
    assert "User: question 0 of d1: what is 0+0?\nAssistant: four" in turn1["messages"][-1]["content"]


def test_preflight_rejects_a_model_the_server_does_not_serve(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers={"d1": ["four"]}, references={"d1": ["4"]})
    with serve_in_thread() as server:
        with pytest.raises(JudgeError, match="not served"):
            judge_run(panel_cfg(tmp_path, server, model="gpt-oss-120b"), run_dir)
        assert chat_calls(server) == 0


@pytest.mark.slow
def test_real_smollm2_behind_the_server(tmp_path: Path, make_run, smollm2_server) -> None:
    """A real model over HTTP: exact usage tokens from its tokenizer; whatever it says is a
    valid score, or recorded with its text as unparsed or, when it hit the reply limit, as
    truncated (which of the three depends on the machine: bf16 and fp32 decode differently)."""
    run_dir = make_run(answers={"d1": ["four"]}, references={"d1": ["4"]})
    before = smollm2_server.stats()["chat_requests"]
    judge_run(panel_cfg(tmp_path, smollm2_server, parse_retries=0, timeout=300.0, max_retries=0),
              run_dir)
    assert smollm2_server.stats()["chat_requests"] == before + 1
    [row] = scores(run_dir)
    assert row["status"] in ("ok", "unparsed", "truncated") and row["raw"] is not None
    assert (row["status"] == "truncated") == (row["finish_reason"] == "length")
    assert row["tokens"]["prompt"] > 200 and 1 <= row["tokens"]["completion"] <= 16
    assert (row["score"] is None) == (row["status"] != "ok")


def test_resume_rejudges_only_lines_whose_request_changed(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers={"d1": ["four", "twelve"]}, references={"d1": ["4", "12"]})
    with serve_in_thread(default=Behavior.reply("0.7")) as server:
        cfg = panel_cfg(tmp_path, server)
        judge_run(cfg, run_dir)
        cfg.judge.prompt_settings.similarity.context_turns = 1
        cfg.judge.cache.enabled = False
        judge_run(cfg, run_dir)
        # turn 0 has no earlier turn: same request, kept; turn 1 now shows turn 0: re-judged
        assert chat_calls(server) == 3
    rows = scores(run_dir)
    assert len(rows) == 2
    assert "Prior dialogue" in rows[1]["messages"][0]["content"]


def test_non_json_http_body_is_an_api_error_not_a_score(tmp_path: Path, make_run) -> None:
    run_dir = make_run(answers={"d1": ["four"]}, references={"d1": ["4"]})
    with serve_in_thread(script=[Behavior.garbage()]) as server:
        with pytest.raises(JudgeError, match="1 of 1 call"):
            judge_run(panel_cfg(tmp_path, server), run_dir)
    [row] = scores(run_dir)
    assert row["status"] == "api_error" and row["score"] is None and row["raw"] is None
    assert "not a chat completion" in row["error"]
