"""``python -m somabench judge <run dir> judge=<panel>``: config merge, errors, a real re-judge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.servers import serve_in_thread, server_stats
from tests.judges.conftest import base_overrides

from somabench.commands import main as cli
from somabench.commands.rejudge import JudgeCliError, build_config
from somabench.config import compose
from somabench.judges.panel import SCORES_FILE
from somabench.testing.scripted import Behavior

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_with_config(tmp_path: Path, make_run) -> Path:
    cfg = compose(base_overrides(tmp_path) + ["judge=none", "method=surrogate"])
    return make_run(answers={"d1": ["The answer is 4."]}, references={"d1": ["2 + 2 = 4"]},
                    cfg=cfg)


def test_build_config_takes_the_run_config_and_the_panel(run_with_config: Path) -> None:
    cfg = build_config(run_with_config, ["judge=local", "judge.concurrency=3",
                                         "~judge.judges.smollm2_135m", "progress=false"])
    assert cfg.method.name == "surrogate" and cfg.judge.name == "local"
    assert cfg.judge.concurrency == 3 and set(cfg.judge.judges) == {"qwen_coder_1_5b",
                                                                     "qwen_coder_0_5b"}
    # ${cache.path} resolves against the run's own config
    assert cfg.judge.cache.path == cfg.cache.path


def test_build_config_errors_are_explained(run_with_config: Path, tmp_path: Path) -> None:
    with pytest.raises(JudgeCliError, match="judge=<embedding"):
        build_config(run_with_config, [])  # the run was made with judge=none
    with pytest.raises(JudgeCliError, match="no run.json"):
        build_config(tmp_path, ["judge=embedding"])
    with pytest.raises(JudgeCliError, match="not a key"):
        build_config(run_with_config, ["judge=embedding", "genration.max_new_tokens=3"])
    with pytest.raises(JudgeCliError, match="Did you mean 'concurrency'"):
        build_config(run_with_config, ["judge=paper", "judge.concurency=3"])


def test_main_rejudges_with_another_panel_on_a_real_server(run_with_config: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    with serve_in_thread(default=Behavior.reply("0.6")) as server:
        code = cli(["judge", str(run_with_config), "judge=paper", "~judge.judges.deepseek_v3",
                    "~judge.judges.gemma2_27b", f"judge.judges.gpt_oss.base_url={server.base_url}",
                     "judge.judges.gpt_oss.model=scripted-echo", "judge.judges.gpt_oss.api_key_env=null"])
        assert code == 0 and server_stats(server)["chat_requests"] == 1
    out = capsys.readouterr().out
    assert "panel:paper" in out and "objective (similarity %, all turns): 60.0" in out
    [row] = [json.loads(x) for x in (run_with_config / SCORES_FILE).read_text().splitlines()]
    assert row["judge"] == "gpt_oss" and row["panel"] == "paper" and row["score"] == 0.6


def test_main_reports_an_unreachable_judge(run_with_config: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    with serve_in_thread() as server:
        dead = server.base_url
    code = cli(["judge", str(run_with_config), "judge=paper", "~judge.judges.deepseek_v3",
                 "~judge.judges.gemma2_27b", f"judge.judges.gpt_oss.base_url={dead}",
                 "judge.judges.gpt_oss.api_key_env=null", "judge.preflight_timeout=2"])
    assert code == 1
    assert "cannot reach" in capsys.readouterr().err


def test_missing_api_key_is_named(run_with_config: Path, capsys: pytest.CaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    assert cli(["judge", str(run_with_config), "judge=paper"]) == 1
    assert "OPENROUTER_API_KEY" in capsys.readouterr().err


def test_cli_help() -> None:
    out = subprocess.run([sys.executable, "-m", "somabench", "judge", "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0 and "judge=<panel>" in out.stdout


@pytest.mark.slow
def test_cli_subprocess_embedding(run_with_config: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "somabench", "judge", str(run_with_config),
                          "judge=embedding"], capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert "panel:embedding" in out.stdout and "embedding-proxy" in out.stdout
