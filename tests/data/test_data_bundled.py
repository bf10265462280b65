"""Every bundled file and every conf/dataset yaml loads; loader lookup errors are helpful."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from somabench.data import DatasetError, Dialogue, Turn, load_dialogues
from somabench.data.files import read_dialogues_jsonl
from somabench.data.loaders import bundled_dir
from somabench.data.select import SELECTION_KEYS
from somabench.registry import RegistryError, dataset_loaders

CONF_DATASET = Path(__file__).resolve().parents[2] / "conf" / "dataset"
# (dialogues, turns) per file, from the table in src/somabench/data/bundled/SOURCES.md.
SOURCES_COUNTS = {
    "mtbench": (80, 160),
    "mtbench101": (1388, 4208),
    "mathmt": (168, 704),
    "remedi": (100, 833),
    "craigslist": (5, 17),
}
BUNDLED = sorted(SOURCES_COUNTS)
ALL_DATASETS = sorted([*BUNDLED, "sharegpt", "multichar", "custom"])


def test_every_bundled_file_has_a_yaml() -> None:
    files = sorted(p.name.removesuffix(".jsonl.gz") for p in bundled_dir().glob("*.jsonl.gz"))
    assert files == BUNDLED


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_full_file_loads_and_matches_sources(name: str, dataset_cfg) -> None:
    dialogues = load_dialogues(dataset_cfg(name), limit=None, seed=0)
    n_dialogues, n_turns = SOURCES_COUNTS[name]
    assert len(dialogues) == n_dialogues
    assert sum(len(d.turns) for d in dialogues) == n_turns
    assert len({d.id for d in dialogues}) == n_dialogues
    for dialogue in dialogues:
        assert isinstance(dialogue, Dialogue)
        assert dialogue.dataset == name
        assert all(isinstance(t, Turn) and t.user.strip() for t in dialogue.turns)
        assert isinstance(dialogue.meta["source"], str) and dialogue.meta["license"]
    # Without filters, load_dialogues returns the file in file order.
    assert dialogues == read_dialogues_jsonl(bundled_dir() / f"{name}.jsonl.gz")


@pytest.mark.parametrize("name", BUNDLED)
def test_tiny_sample_is_five_dialogues_of_the_full_file(name: str, dataset_cfg) -> None:
    tiny = load_dialogues(dataset_cfg(name, tiny=True), limit=None, seed=0)
    full = {d.id: d for d in load_dialogues(dataset_cfg(name), limit=None, seed=0)}
    assert len(tiny) == 5
    assert all(full[d.id] == d for d in tiny)


def test_dialogues_are_frozen(dataset_cfg) -> None:
    dialogue = load_dialogues(dataset_cfg("mtbench", tiny=True), limit=1, seed=0)[0]
    with pytest.raises(AttributeError):
        dialogue.id = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        dialogue.turns[0].user = "other"  # type: ignore[misc]
    assert isinstance(dialogue.turns, tuple)


def test_yaml_files_name_equals_stem_and_loader_is_registered() -> None:
    stems = sorted(p.stem for p in CONF_DATASET.glob("*.yaml"))
    assert stems == ALL_DATASETS
    keys = {"name", "loader", "file", "tiny", "path", "hub", *SELECTION_KEYS}
    # gold_answers: read by judge=task (judges/), declared by datasets that have them;
    # format: how loader=jsonl reads the file (somabench.data.formats)
    optional = {"gold_answers", "format"}
    for stem in stems:
        cfg = OmegaConf.load(CONF_DATASET / f"{stem}.yaml")
        assert keys <= set(cfg) <= keys | optional, stem
        assert cfg.name == stem
        assert cfg.loader in dataset_loaders
        if cfg.loader == "bundled":
            assert (bundled_dir() / cfg.file).is_file()


def test_registered_loader_kinds() -> None:
    assert {"bundled", "jsonl", "hub"} <= set(dataset_loaders.names())


def test_unknown_loader_gets_did_you_mean(dataset_cfg) -> None:
    with pytest.raises(RegistryError, match="Did you mean 'bundled'"):
        load_dialogues(dataset_cfg("mtbench", loader="bundeld"), limit=None, seed=0)


def test_unknown_bundled_file_lists_available(dataset_cfg) -> None:
    with pytest.raises(DatasetError, match=r"dataset.file='nope.jsonl.gz'.*mtbench.jsonl.gz"):
        load_dialogues(dataset_cfg("mtbench", file="nope.jsonl.gz"), limit=None, seed=0)


def test_custom_requires_path(dataset_cfg) -> None:
    with pytest.raises(DatasetError, match=r"dataset.path is required"):
        load_dialogues(dataset_cfg("custom"), limit=None, seed=0)


def test_custom_loads_jsonl_and_gz(dataset_cfg, write_jsonl, dialogue_line, tmp_path) -> None:
    import gzip

    plain = write_jsonl([dialogue_line("a"), dialogue_line("b", 3)])
    packed = tmp_path / "d.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        dialogues = load_dialogues(dataset_cfg("custom", path=str(path)), limit=None, seed=0)
        assert [d.id for d in dialogues] == ["a", "b"]
        assert dialogues[1].turns[2] == Turn(user="question 2", assistant="answer 2")


def test_custom_relative_path_is_taken_from_cwd(
    dataset_cfg, write_jsonl, dialogue_line, tmp_path, monkeypatch
) -> None:
    write_jsonl([dialogue_line("a")], name="rel.jsonl")
    monkeypatch.chdir(tmp_path)
    dialogues = load_dialogues(dataset_cfg("custom", path="rel.jsonl"), limit=None, seed=0)
    assert [d.id for d in dialogues] == ["a"]


def test_custom_missing_file(dataset_cfg, tmp_path) -> None:
    with pytest.raises(DatasetError, match="dataset file not found"):
        load_dialogues(dataset_cfg("custom", path=str(tmp_path / "x.jsonl")), limit=None, seed=0)


def test_tiny_is_only_for_bundled(dataset_cfg, write_jsonl, dialogue_line) -> None:
    path = write_jsonl([dialogue_line("a")])
    with pytest.raises(DatasetError, match="tiny=true needs bundled data"):
        load_dialogues(dataset_cfg("custom", path=str(path), tiny=True), limit=None, seed=0)


def test_missing_config_key_is_named(dataset_cfg) -> None:
    cfg = OmegaConf.to_container(dataset_cfg("mtbench"))
    del cfg["sample"]
    with pytest.raises(DatasetError, match=r"dataset.sample"):
        load_dialogues(cfg, limit=None, seed=0)
