"""W&B logger: offline run with config (secrets removed), tables, summary, figure, artifact.

The offline run's transaction log (``run-<id>.wandb``) is read back with a small reader of
its record framing (LevelDB log format: 32 KiB blocks, 7-byte record headers, after a 7-byte
W&B file header) and W&B's own protobuf ``Record`` messages.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from omegaconf import open_dict
from tests.report.report_fixtures import FAMILY

from somabench.config import compose
from somabench.report.wandb_logger import REDACTED, artifact_contents, scrub

BLOCK = 32768  # LevelDB log block size
HEADER = 7     # W&B file header (":W&B" + magic + version) and LevelDB record header sizes
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunks, out = HEADER, b"", []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        payload = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            out.append(payload)
        elif kind == FIRST:
            chunks = payload
        elif kind == MIDDLE:
            chunks += payload
        elif kind == LAST:
            out.append(chunks + payload)
    records = []
    for payload in out:
        record = pb.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


FLUSH_TIMEOUT_S = 30  # wandb-core writes the offline log asynchronously, after finish() returns


def finished_records(run_dir: Path) -> list[Any]:
    """The records of an offline run once its exit record is on disk."""
    import time

    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    while True:
        records = read_wandb_records(next(run_dir.glob("run-*.wandb")))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_scrub_removes_secret_keys_and_env_values():
    env = {"MY_KEY": "sk-live-1234567890", "HF_TOKEN": "hf_abcdefghij", "SHORT_KEY": "x"}
    config = {"model": {"F": {"api_key_env": "MY_KEY", "base_url": "http://h/v1?key=sk-live-1234567890",
                              "api_key": "literal", "token": "t0k3n"},
                        "tokens": 5, "hub": "hf_abcdefghij"},
              "judge": {"judges": [{"password": "p", "model": "m"}]}, "flag": "x"}
    out = scrub(config, env)
    assert out["model"]["F"]["api_key_env"] == "MY_KEY"  # a variable name is not a secret
    assert out["model"]["F"]["base_url"] == REDACTED
    assert out["model"]["F"]["api_key"] == REDACTED and out["model"]["F"]["token"] == REDACTED
    assert out["model"]["tokens"] == 5 and out["model"]["hub"] == REDACTED
    assert out["judge"]["judges"][0] == {"password": REDACTED, "model": "m"}
    assert out["flag"] == "x"  # short env values are not treated as secrets
    assert config["model"]["F"]["api_key"] == "literal"  # the input is not modified


@pytest.mark.wandb
def test_offline_run_logs_config_tables_summary_and_artifact(outputs, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed")
    from somabench.report.wandb_logger import start

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("SOMABENCH_TEST_API_KEY", "sk-never-logged-42")
    run_dir = outputs / "tiny_exp" / FAMILY / "mathmt" / "soma"
    cfg = compose(["logger=wandb", "method=surrogate", "dataset=mathmt", "task_name=tiny_exp",
                   f"paths.output_root={outputs}"])
    with open_dict(cfg):  # an endpoint whose URL carries a key, named by an *_env key
        cfg.judge.name = "p1"  # the panel that scored the fixture run
        cfg.model.F.api_key_env = "SOMABENCH_TEST_API_KEY"
        cfg.model.F.base_url = "https://x/v1?k=sk-never-logged-42"
    logger = start(cfg, run_dir)
    assert logger is not None
    logger.log_results()
    logger.finish("success")

    offline = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, "one W&B run per job"
    records = finished_records(offline[0])
    kinds = [r.WhichOneof("record_type") for r in records]
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_group == "tiny_exp" and run.job_type == "surrogate"
    assert set(run.tags) >= {"surrogate", "mathmt", "tiny"}
    assert run.display_name == "tiny_exp/tiny/mathmt/soma"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["model"]["F"]["base_url"] == REDACTED
    assert config["method"]["name"] == "surrogate"
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({u.key: json.loads(u.value_json) for u in r.summary.update if u.key})
    assert summary["sim/judge_mean"] == pytest.approx((260 / 3 + 90) / 2)
    assert summary["panel/p1/sim/judge_mean"] == summary["sim/judge_mean"]
    assert summary["sim/excluded"] == 1 and summary["run/status"] == "success"
    assert summary["tokens/total"] == pytest.approx(360.0)
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert "run-records" in {a.type for a in artifacts}
    records_manifest = next(a for a in artifacts if a.type == "run-records").manifest
    assert {c.path for c in records_manifest.contents} >= {"records.jsonl", "dialogues.jsonl", "scores.jsonl",
                                                           "run.json", "reference/records.jsonl"}
    assert "exit" in kinds
    tables = {p.name.split("_")[0]: p for p in (offline[0] / "files" / "media" / "table" / "records").glob("*.json")}
    turns = json.loads(tables["turns"].read_text())
    assert len(turns["data"]) == 6 and "similarity" in turns["columns"]
    assert list((offline[0] / "files" / "media" / "images").rglob("*.png"))
    blob = b"".join(p.read_bytes() for p in offline[0].rglob("*") if p.is_file())
    assert b"sk-never-logged-42" not in blob


def test_artifact_download_gives_the_same_numbers(outputs, report_cfg, tmp_path):
    """What the logger uploads, laid out like `wandb artifact download`, gives the same numbers."""
    from somabench.report.build import dialogue_data
    from somabench.report.collect import load_local

    download = tmp_path / "download"
    for run_dir in sorted((outputs / "tiny_exp").rglob("run.json")):
        target = download / run_dir.parent.relative_to(outputs / "tiny_exp").as_posix().replace("/", "_")
        for name, content in artifact_contents(run_dir.parent).items():
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                path.write_bytes(content.read_bytes())
            else:
                path.write_text(content)
    keys = ["label", "dataset", "dialogue_id"]
    columns = [*keys, "tokens_total", "similarity@p1", "excluded_unparsed", "excluded_api_error"]
    local = dialogue_data(load_local(outputs / "tiny_exp", report_cfg), report_cfg)
    remote = dialogue_data(load_local(download, report_cfg), report_cfg)
    local = local[columns].sort_values(keys).reset_index(drop=True)
    remote = remote[columns].sort_values(keys).reset_index(drop=True)
    assert len(local) == 14  # 5 runs x 2 dialogues + the Original (reference) on 4 dialogues
    assert local.equals(remote)


@pytest.mark.wandb
def test_sequential_jobs_get_one_run_each_and_a_failed_job_is_closed(outputs, tmp_path, monkeypatch):
    """Hydra's basic launcher runs multirun jobs in one process: each job must get its own run."""
    pytest.importorskip("wandb", reason="wandb not installed")
    from somabench.report.wandb_logger import start

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for method, status in (("surrogate", "success"), ("soma_wo_adl", "error")):
        cfg = compose(["logger=wandb", "task_name=tiny_exp", f"paths.output_root={outputs}"])
        logger = start(cfg, outputs / "tiny_exp" / FAMILY / "mathmt" / method)
        if status == "success":
            logger.log_results()
        logger.finish(status)  # what task.run_task's finally does
    runs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    codes = []
    for run in runs:
        records = finished_records(run)
        codes += [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
    assert sorted(codes) == [0, 1]
