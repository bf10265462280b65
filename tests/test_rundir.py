"""The run-directory contract (somabench.rundir): one list of non-output keys shared by the
config hash, Hydra's sweep subdir names, the reference key and the judge panel; a rerun with
only transport or cache knobs changed resumes; a run that failed before serving anything does
not block a corrected rerun. Fast: the ``fake`` backend serves (control flow only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from somabench.config import compose, conf_dir
from somabench.errors import RunDirConflict
from somabench.reference import reference_key
from somabench.rundir import (
    RUN_HEADER,
    TRANSPORT_KEYS,
    config_hash,
    dirname_exclude_keys,
    is_non_output,
    read_header,
)
from somabench.task import run_task

FAKE = ["model.F.backend=testing.fake", "model.G.backend=testing.fake", "model.F.asset=null", "model.G.asset=null"]


def fake_overrides(tmp_path: Path) -> list[str]:
    return [*FAKE, "dataset=mathmt", "dataset.tiny=true", "limit=2", "judge=none",
            "method=original", "progress=false", "logger=csv",
            f"paths.output_root={tmp_path / 'outputs'}",
            f"cache.path={tmp_path / 'cache' / 'requests.sqlite'}"]


def run_dir(cfg) -> Path:  # noqa: ANN001
    return Path(cfg.paths.output_root) / cfg.task_name / cfg.run_name


def test_hash_ignores_cache_transport_and_bookkeeping_but_not_outputs(tmp_path: Path) -> None:
    base = compose(fake_overrides(tmp_path))
    same = compose([*fake_overrides(tmp_path), "cache.enabled=false", "model.F.timeout=7",
                    "model.G.max_retries=1", "progress=true", "judge=embedding", "limit=1",
                    "fail_on_error=0.5"])
    assert config_hash(base) == config_hash(same)
    for changed in ("generation.max_new_tokens=3", "seed=1", "history=reference",
                    "model.F.model_id=other"):
        assert config_hash(compose([*fake_overrides(tmp_path), changed])) != config_hash(base), changed


def test_hydra_exclude_keys_are_the_non_output_keys() -> None:
    hydra_cfg = yaml.safe_load((conf_dir() / "hydra" / "default.yaml").read_text())
    exclude = hydra_cfg["job"]["config"]["override_dirname"]["exclude_keys"]
    assert exclude == dirname_exclude_keys()
    assert all(is_non_output(k) for k in exclude if not k.startswith("hydra."))
    assert is_non_output("shard")  # selection, not output; it still names its own subdir
    assert "shard" not in exclude and "run_name" not in exclude


def test_reference_key_and_panel_share_the_transport_list(tmp_path: Path) -> None:
    from somabench.judges.panel import PANEL_KEYS

    assert set(TRANSPORT_KEYS) <= set(PANEL_KEYS)
    base = compose(fake_overrides(tmp_path))
    moved = compose([*fake_overrides(tmp_path), *(f"model.F.{k}=3" for k in TRANSPORT_KEYS)])
    assert reference_key(base) == reference_key(moved)
    assert reference_key(base) != reference_key(
        compose([*fake_overrides(tmp_path), "generation.max_new_tokens=3"]))


def test_rerun_with_cache_off_and_new_timeout_resumes(tmp_path: Path) -> None:
    cfg = compose(fake_overrides(tmp_path))
    run_task(cfg)
    out = run_dir(cfg)
    records = (out / "records.jsonl").read_text()
    first = read_header(out)
    assert first is not None and first.status == "success"
    again = compose([*fake_overrides(tmp_path), "cache.enabled=false", "model.F.timeout=3"])
    run_task(again)  # would raise RunDirConflict if the hash moved
    assert (out / "records.jsonl").read_text() == records  # nothing served twice
    header = read_header(out)
    assert header is not None
    assert header.config_hash == first.config_hash and header.status == "success"
    assert header.started == first.started


def test_failed_before_serving_does_not_block_a_corrected_rerun(tmp_path: Path) -> None:
    from somabench.data import DatasetError

    bad = compose([*fake_overrides(tmp_path), "dataset.tasks=[zzz]"])
    with pytest.raises(DatasetError, match="zzz"):
        run_task(bad)
    out = run_dir(bad)
    failed = read_header(out)
    assert failed is not None and failed.status == "error" and "zzz" in (failed.error or "")
    assert failed.traceback and "Traceback" in failed.traceback  # kept for the post-mortem
    good = compose(fake_overrides(tmp_path))
    run_task(good)  # a different config takes over the dir: nothing was served there
    header = read_header(out)
    assert header is not None and header.status == "success"
    assert header.config_hash == config_hash(good) and header.traceback is None
    # Once records exist, another config is refused (and the header is left as it was).
    other = compose([*fake_overrides(tmp_path), "generation.max_new_tokens=3"])
    with pytest.raises(RunDirConflict, match="different config"):
        run_task(other)
    assert json.loads((out / RUN_HEADER).read_text())["config_hash"] == config_hash(good)


# -- the typed header, the JSONL rule, the reference resolver, list_runs ------------------------
FIXTURES = Path(__file__).parent / "fixtures"


def test_an_old_header_loads_upgraded_and_is_not_rewritten(tmp_path: Path) -> None:
    """run.json files written before header_version existed still load (upgraded on read)."""
    from somabench.rundir import HEADER_VERSION

    text = (FIXTURES / "run_header_v1.json").read_text()
    (tmp_path / RUN_HEADER).write_text(text)
    header = read_header(tmp_path)
    assert header is not None and header.status == "success" and header.objective == 67.2
    assert header.header_version == HEADER_VERSION and header.traceback is None
    assert header.config["method"]["name"] == "surrogate" and header.extra == {}
    assert header.models["G"]["dtype"] == "float32"
    assert (tmp_path / RUN_HEADER).read_text() == text  # reading never rewrites the file


def test_a_header_without_status_reads_as_started_and_bench_writes_one(tmp_path: Path) -> None:
    """The judge bench used to write a header holding only reference_dir."""
    from somabench.bench.judges import write_synthetic_run

    (tmp_path / RUN_HEADER).write_text(json.dumps({"reference_dir": "refs/x"}))
    header = read_header(tmp_path)
    assert header is not None and header.status == "started" and header.reference_dir == "refs/x"
    run_dir = write_synthetic_run(tmp_path / "bench", 1, 1)
    written = json.loads((run_dir / RUN_HEADER).read_text())
    assert written["status"] == "success" and written["header_version"] >= 2


def test_unknown_keys_survive_and_bad_headers_are_one_clear_error(tmp_path: Path) -> None:
    from somabench.errors import RunFileError
    from somabench.rundir import HEADER_VERSION, update_header

    (tmp_path / RUN_HEADER).write_text(json.dumps({"status": "running", "note": "by hand"}))
    header = update_header(tmp_path, objective=1.5)
    assert header is not None and header.extra == {"note": "by hand"}
    on_disk = json.loads((tmp_path / RUN_HEADER).read_text())
    assert on_disk["note"] == "by hand" and on_disk["objective"] == 1.5
    assert on_disk["header_version"] == HEADER_VERSION
    with pytest.raises(ValueError, match="no field"):
        update_header(tmp_path, objectiv=2.0)
    assert update_header(tmp_path / "empty", objective=1.0) is None  # no header: nothing written
    for bad, message in (({"status": "done"}, "status 'done' is not one of"),
                         ({"status": "success", "header_version": HEADER_VERSION + 1}, "newer")):
        (tmp_path / RUN_HEADER).write_text(json.dumps(bad))
        with pytest.raises(RunFileError, match=message):
            read_header(tmp_path)
    (tmp_path / RUN_HEADER).write_text('{"status": "succ')
    with pytest.raises(RunFileError, match=RUN_HEADER):
        read_header(tmp_path)


def test_one_jsonl_rule_torn_last_line_dropped_corrupt_middle_line_named(tmp_path: Path) -> None:
    from somabench.errors import RunFileError
    from somabench.rundir import append_jsonl, read_jsonl, read_jsonl_rows

    path = tmp_path / "lines.jsonl"
    append_jsonl(path, {"a": 1})
    append_jsonl(path, {"a": 2})
    with path.open("a") as fh:
        fh.write("\n" + '{"a": ')  # a blank line, then a write cut off by a crash
    assert read_jsonl_rows(path) == ([{"a": 1}, {"a": 2}], True)
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(RunFileError, match=r"lines.jsonl:2: corrupt"):
        read_jsonl(path)
    assert read_jsonl(tmp_path / "absent.jsonl") == []


def test_one_reference_resolver(tmp_path: Path) -> None:
    """Bundled copy first, then the recorded dir, then references/<key> up the tree, then the
    config's own dir; only a dir holding turn lines counts."""
    from somabench.rundir import REFERENCE_SUBDIR, TURNS_FILE, RunHeader, resolve_reference

    def ref(path: Path) -> Path:
        path.mkdir(parents=True)
        (path / TURNS_FILE).write_text("")
        return path.resolve()

    run_dir = tmp_path / "study" / "exp" / "run"
    run_dir.mkdir(parents=True)
    header = RunHeader(status="success", reference_dir="/moved/away/refkey", reference_key="refkey")
    derived = tmp_path / "derived"
    assert resolve_reference(run_dir, header, derived) is None  # nothing holds turns
    assert resolve_reference(run_dir, header, ref(derived)) == derived.resolve()
    by_key = ref(tmp_path / "study" / "references" / "refkey")
    assert resolve_reference(run_dir, header, derived) == by_key
    recorded = ref(tmp_path / "elsewhere" / "refkey")
    header.reference_dir = str(recorded)
    assert resolve_reference(run_dir, header, derived) == recorded
    assert resolve_reference(run_dir, None, None) is None
    assert resolve_reference(run_dir, header) == recorded
    bundled = ref(run_dir / REFERENCE_SUBDIR)
    assert resolve_reference(run_dir, header, derived) == bundled


def test_list_runs_reads_headers_and_counts_dialogues(tmp_path: Path) -> None:
    cfg = compose(fake_overrides(tmp_path))
    run_task(cfg)
    from somabench.rundir import list_runs

    entries = {e.path: e for e in list_runs(tmp_path / "outputs")}
    run = entries[run_dir(cfg)]
    assert run.header is not None and run.header.status == "success" and run.n_dialogues == 2
    assert run.header.config["method"]["name"] == "original"


def test_only_rundir_names_the_run_header_file() -> None:
    """Every other module reaches run.json through somabench.rundir (read_header & co.): the
    file name as a literal (not in a docstring or message) appears in rundir alone."""
    import ast

    root = Path(__file__).resolve().parents[1]
    owners = []
    for folder in ("src/somabench", "judges", "baselines"):
        for path in sorted((root / folder).rglob("*.py")):
            if path.resolve() != path:
                continue  # a symlinked copy of judges/ or baselines/ (read once, at its home)
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if any(isinstance(n, ast.Constant) and n.value == RUN_HEADER for n in ast.walk(tree)):
                owners.append(str(path.relative_to(root)))
    assert owners == ["src/somabench/rundir.py"]
