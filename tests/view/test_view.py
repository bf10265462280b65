"""``somabench view``: the page built from a small fixture of records, opened in headless
Chromium (Debian's ``chromium``) and checked in its DOM; a screenshot is saved."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from somabench.commands import main as cli_main
from somabench.records import DialogueRecord, RecordStore, TurnRecord, Usage
from somabench.rundir import RUN_HEADER, SCORES_FILE
from somabench.view import Answer, _facts, collect, disagrees, render, word_diff

CHROMIUM = shutil.which("chromium") or (Path("/usr/bin/chromium") if Path("/usr/bin/chromium").exists() else None)
BROWSER_TIMEOUT_S = 120
USERS = ["What is 2 + 3?", "Now multiply it by 4."]
ORIGINAL = ["2 + 3 = 5.", "5 times 4 is 20."]
ANSWERS = {  # method -> (served_by, answers, gate per turn)
    "soma": ("F", ["2 + 3 = 5.", "5 times 4 gives 20 <b>"],
             [{"phase": "warm", "score": None, "switched": False, "switch_turn": None},
              {"phase": "switched", "score": 0.912345, "threshold": 0.8, "switched": True,
               "switch_turn": 1, "Delta": 0.0421, "rollback": False}]),
    "surrogate": ("G", ["It is 5.", "5 times 4 is 20."], [None, None]),
}


def _turn(run_id: str, method: str, turn: int, served: str, response: str,
          gate: dict | None = None) -> TurnRecord:
    return TurnRecord(
        run_id=run_id, dialogue_id="d1", dataset="mathmt", turn=turn, method=method,
        served_by=served, model_id="m", user=USERS[turn], response=response, rendered_prompt="p",
        prompt_hash="h", tokens={served: Usage(prompt=11 + turn, completion=7)},
        seconds={"generate": 0.5, "ttft": 0.12, "latency": 0.61}, gate=gate,
        reference_turn_ref=f"ref/d1/{turn}")


def _store(run_dir: Path, turns: list[TurnRecord], header: dict | None = None) -> None:
    store = RecordStore(run_dir)
    store.append_dialogue(turns, DialogueRecord(run_id=run_dir.name, dialogue_id="d1", dataset="mathmt",
                                                method=turns[0].method, n_turns=len(turns)))
    if header is not None:
        (run_dir / RUN_HEADER).write_text(json.dumps(header))


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    """outputs/<experiment>/ with a reference (the Original), a SOMA and a Surrogate run, and
    one judge line per SOMA turn."""
    root = tmp_path / "outputs" / "demo"
    ref = root / "references" / "ref"
    _store(ref, [_turn("ref", "original", i, "F", ORIGINAL[i]) for i in range(2)])
    for method, (served, answers, gates) in ANSWERS.items():
        run_dir = root / "tiny" / "mathmt" / method
        turns = [_turn(method, method, i, "G" if gates[i] and gates[i].get("switched") else served,
                       answers[i], gates[i]) for i in range(2)]
        _store(run_dir, turns, {"status": "success", "reference_dir": str(ref)})
    lines = [{"run_id": "soma", "dialogue_id": "d1", "dataset": "mathmt", "turn": i, "method": "soma",
              "panel": "embedding", "judge": "minilm", "metric": "similarity", "status": "ok",
              "score": s, "score_norm": s, "raw": f"cosine {s}", "post_switch": i == 1}
             for i, s in enumerate((1.0, 0.83))]
    (root / "tiny" / "mathmt" / "soma" / SCORES_FILE).write_text(
        "".join(json.dumps(x) + "\n" for x in lines))
    return root


def test_word_diff_by_hand() -> None:
    assert word_diff("a b c", "a x c") == "a <del>b</del><ins>x</ins> c"
    assert word_diff("a b", "a b d") == "a b<ins> d</ins>"
    assert word_diff("x <y>", "x <y>") == "x &lt;y&gt;"
    # CJK text has no spaces: compared per character, not as one sentence-long word
    assert word_diff("破伤风是一种由细菌引起的疾病。", "破伤风是一种严重的疾病。") == \
        "破伤风是一种<del>由细菌引起</del><ins>严重</ins>的疾病。"
    assert disagrees("a  b", "a b") is False and disagrees("a b", "a c") is True
    assert disagrees(None, "a") is False


def test_facts_show_the_prefix_cache_and_the_press() -> None:
    """Serving rows (issue 26): the cached share of the prompt and what a KV press kept."""
    rec = _turn("r", "kvpress_snapkv_50", 0, "F", "x")
    rec.tokens["F"] = Usage(prompt=130, completion=7, cached_prompt=100)
    rec.extra = {"kv_press": {"applied": True, "prompt_kv_kept": 65}}
    facts = _facts(Answer(label="SnapKV", record=rec, post_switch=False))
    assert "tokens 130 (100 cached) → 7" in facts and "KV kept 65" in facts
    rec.tokens["F"] = Usage(prompt=44, completion=7)
    rec.extra = {"kv_press": {"applied": False, "prompt_kv_kept": 44}}
    facts = _facts(Answer(label="SnapKV", record=rec, post_switch=False))
    assert "tokens 44 → 7" in facts and "press skipped" in facts and "KV kept" not in facts


def test_collect_pairs_answers_with_the_original(outputs: Path) -> None:
    data = collect([outputs])
    assert data.labels == ["soma", "surrogate"]
    turns = data.dialogues[("mathmt", "d1")]
    assert [turns[i].original for i in (0, 1)] == ORIGINAL
    assert turns[1].answers["soma"].post_switch and not turns[0].answers["soma"].post_switch
    assert [j["score"] for j in turns[1].answers["soma"].judges] == [0.83]
    assert turns[0].answers["surrogate"].judges == []


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1280,900"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True,
                          timeout=BROWSER_TIMEOUT_S, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium)")
def test_page_in_headless_chromium(outputs: Path, tmp_path: Path) -> None:
    page = tmp_path / "view.html"
    assert cli_main(["view", str(outputs), "--out", str(page)]) == 0
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path / "profile").stdout
    assert dom.count('class="turn"') == 2
    for user in USERS:
        assert user in dom
    assert dom.count('data-method="soma"') == 2 and dom.count('data-method="surrogate"') == 2
    assert "2 turn(s) shown" in dom  # the page's script ran
    assert "gate cos 0.912" in dom and "Δ +0.042" in dom and ">switch<" in dom
    assert "cosine 0.83" in dom and "TTFT 0.12 s" in dom
    # "5 times 4 is 20." -> "5 times 4 gives 20 <b>": word-level diff, the answer escaped
    assert "<del>is</del><ins>gives</ins>" in dom and "<ins>20 &lt;b&gt;</ins>" in dom
    # filters from the address: post-switch only keeps turn 2 with SOMA's cell
    dom = _chromium(["--dump-dom", page.as_uri() + "#post=1"], tmp_path / "profile").stdout
    assert "1 turn(s) shown" in dom
    hidden = re.findall(r'class="turn hidden" data-turn="(\d)"', dom)
    assert hidden == ["0"]
    dom = _chromium(["--dump-dom", page.as_uri() + "#methods=surrogate&disagree=1"],
                    tmp_path / "profile").stdout
    assert "1 turn(s) shown" in dom  # only the Surrogate's first answer differs
    shot = tmp_path / "view.png"
    _chromium([f"--screenshot={shot}", page.as_uri()], tmp_path / "profile")
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_names_missing_reference(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _store(run_dir, [_turn("r", "surrogate", 0, "G", "hi")], {"status": "success"})
    html = render(collect([run_dir]))
    assert "(no reference answer)" in html and "hi" in html


def test_bad_path_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["view", str(tmp_path / "nope")]) != 0
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium)")
def test_committed_study_folder_in_headless_chromium(tmp_path: Path) -> None:
    """`somabench view results/study_tiny_qwen`: every turn of the committed study is on the page."""
    import json as _json

    study = Path(__file__).resolve().parents[2] / "results" / "study_tiny_qwen"
    turns = {(r["dataset"], r["dialogue_id"], r["turn"]) for path in (study / "runs").rglob("records.jsonl")
             for r in map(_json.loads, path.read_text().splitlines()) if r.get("kind", "turn") == "turn"}
    assert len(turns) >= 240  # 30 ReMeDi sessions x 8 turns
    page = tmp_path / "view.html"
    assert cli_main(["view", str(study), "--out", str(page)]) == 0
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path / "profile").stdout
    assert dom.count('class="turn"') == len(turns)
    assert f"{len(turns)} turn(s) shown" in dom
    shot = tmp_path / "study.png"
    _chromium([f"--screenshot={shot}", page.as_uri()], tmp_path / "profile")
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
