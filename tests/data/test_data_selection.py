"""Filters, truncation, seeded sample, shard partition and limit.

Expected counts are hand-computed from the turns/dialogue table of bundled/SOURCES.md:
mtbench101 has 2:459, 3:554, 4:259, 5:107, 6:6, 7:3 dialogues per turn count, and tasks
CM=80, SI=149.
"""

from __future__ import annotations

import logging
import re

import pytest

from somabench.data import DatasetError, load_dialogues
from somabench.data.files import read_dialogues_jsonl
from somabench.data.loaders import bundled_dir


def _ids(dialogues) -> list[str]:
    return [d.id for d in dialogues]


@pytest.fixture(scope="module")
def mtb101_all():
    return read_dialogues_jsonl(bundled_dir() / "mtbench101.jsonl.gz")


def test_min_max_turns_inclusive(dataset_cfg) -> None:
    kept = load_dialogues(dataset_cfg("mtbench101", min_turns=4, max_turns=5), limit=None, seed=0)
    assert len(kept) == 259 + 107
    assert {len(d.turns) for d in kept} == {4, 5}


def test_only_max_turns(dataset_cfg) -> None:
    kept = load_dialogues(
        dataset_cfg("mtbench101", min_turns=None, max_turns=2), limit=None, seed=0
    )
    assert len(kept) == 459


def test_truncate_after_filters(dataset_cfg, mtb101_all) -> None:
    cfg = dataset_cfg("mtbench101", min_turns=3, truncate_turns=2)
    kept = load_dialogues(cfg, limit=None, seed=0)
    assert len(kept) == 554 + 259 + 107 + 6 + 3  # filters see the original length
    assert {len(d.turns) for d in kept} == {2}
    original = {d.id: d for d in mtb101_all}
    for dialogue in kept:
        full = original[dialogue.id]
        assert dialogue.turns == full.turns[:2]
        assert dialogue.meta["num_turns_original"] == len(full.turns)
        assert "num_turns_original" not in full.meta  # the source object is not mutated


def test_truncate_leaves_short_dialogues_alone(dataset_cfg) -> None:
    kept = load_dialogues(dataset_cfg("mtbench", truncate_turns=5), limit=None, seed=0)
    assert all(len(d.turns) == 2 and "num_turns_original" not in d.meta for d in kept)


def test_tasks_filter(dataset_cfg) -> None:
    kept = load_dialogues(dataset_cfg("mtbench101", tasks=["CM", "SI"]), limit=None, seed=0)
    assert len(kept) == 80 + 149
    assert {d.meta["task"] for d in kept} == {"CM", "SI"}


def test_unknown_task_is_an_error_with_hint(dataset_cfg) -> None:
    with pytest.raises(DatasetError, match=r"\['CX'\].*Did you mean.*Available: AR, CC"):
        load_dialogues(dataset_cfg("mtbench101", tasks=["CM", "CX"]), limit=None, seed=0)


def test_tasks_need_meta_task(dataset_cfg, write_jsonl, dialogue_line) -> None:
    path = write_jsonl([dialogue_line("a", task="t"), dialogue_line("b")])
    with pytest.raises(DatasetError, match="'b'.*has no string meta.task"):
        load_dialogues(dataset_cfg("custom", path=str(path), tasks=["t"]), limit=None, seed=0)


def test_empty_selection_is_an_error(dataset_cfg) -> None:
    with pytest.raises(DatasetError, match=r"no dialogue of 'mtbench101' passes the filters"):
        load_dialogues(dataset_cfg("mtbench101", min_turns=8), limit=None, seed=0)


def test_sample_is_deterministic_by_seed(dataset_cfg) -> None:
    cfg = dataset_cfg("mtbench101", sample=50)
    first = load_dialogues(cfg, limit=None, seed=1)
    again = load_dialogues(cfg, limit=None, seed=1)
    other = load_dialogues(cfg, limit=None, seed=2)
    assert len(first) == 50 and len(set(_ids(first))) == 50
    assert first == again
    assert _ids(first) != _ids(other)
    # A sample keeps file order.
    order = {
        d.id: i for i, d in enumerate(load_dialogues(dataset_cfg("mtbench101"), limit=None, seed=0))
    }
    assert [order[i] for i in _ids(first)] == sorted(order[i] for i in _ids(first))


def test_sample_is_drawn_after_filters(dataset_cfg) -> None:
    kept = load_dialogues(dataset_cfg("mtbench101", tasks=["CM"], sample=10), limit=None, seed=0)
    assert len(kept) == 10 and {d.meta["task"] for d in kept} == {"CM"}


def test_sample_larger_than_pool_keeps_all_and_warns(dataset_cfg, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="somabench.data.select"):
        kept = load_dialogues(dataset_cfg("mtbench", sample=500), limit=None, seed=0)
    assert len(kept) == 80
    assert "dataset.sample=500 but only 80" in caplog.text


@pytest.mark.parametrize("n", [1, 3, 4, 7])
def test_shards_partition_the_selection(dataset_cfg, n: int) -> None:
    cfg = dataset_cfg("mtbench101", sample=101)
    whole = _ids(load_dialogues(cfg, limit=None, seed=3))
    shards = [_ids(load_dialogues(cfg, limit=None, seed=3, shard=f"{i}/{n}")) for i in range(n)]
    flat = [x for shard in shards for x in shard]
    assert sorted(flat) == sorted(whole)  # union == whole
    assert len(flat) == len(set(flat))  # disjoint
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    for i, shard in enumerate(shards):
        assert shard == whole[i::n]  # position p goes to shard p % n


def test_limit_applies_per_shard(dataset_cfg) -> None:
    cfg = dataset_cfg("mtbench")
    whole = _ids(load_dialogues(cfg, limit=None, seed=0))
    assert _ids(load_dialogues(cfg, limit=3, seed=0)) == whole[:3]
    assert _ids(load_dialogues(cfg, limit=3, seed=0, shard="1/4")) == whole[1::4][:3]


def test_empty_shard_only_warns(dataset_cfg, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="somabench.data.select"):
        kept = load_dialogues(dataset_cfg("mtbench", tiny=True), limit=None, seed=0, shard="6/8")
    assert kept == [] and "is empty" in caplog.text


@pytest.mark.parametrize("shard", ["4/4", "-1/3", "a/b", "1", "1/0", ""])
def test_bad_shard(dataset_cfg, shard: str) -> None:
    with pytest.raises(DatasetError, match=r"shard=.*expected 'i/n'"):
        load_dialogues(dataset_cfg("mtbench", tiny=True), limit=None, seed=0, shard=shard)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"min_turns": 0}, "dataset.min_turns=0"),
        ({"max_turns": "3"}, "dataset.max_turns='3'"),
        ({"min_turns": 4, "max_turns": 3}, "below dataset.min_turns=4"),
        ({"truncate_turns": 0}, "dataset.truncate_turns=0"),
        ({"sample": True}, "dataset.sample=True"),
        ({"tasks": "CM"}, "dataset.tasks='CM'"),
        ({"tasks": []}, "dataset.tasks=[]"),
        ({"context_dependent_only": "yes"}, "dataset.context_dependent_only='yes'"),
    ],
)
def test_bad_selection_values_name_the_key(dataset_cfg, overrides, fragment: str) -> None:
    with pytest.raises(DatasetError, match=re.escape(fragment)):
        load_dialogues(dataset_cfg("mtbench", **overrides), limit=None, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"), [({"limit": 0}, "limit=0"), ({"seed": "1"}, "seed='1'")]
)
def test_bad_limit_or_seed(dataset_cfg, kwargs, fragment: str) -> None:
    call = {"limit": None, "seed": 0, **kwargs}
    with pytest.raises(DatasetError, match=fragment):
        load_dialogues(dataset_cfg("mtbench", tiny=True), **call)


def test_context_dependent_only_refuses_unlabelled_data(dataset_cfg, write_jsonl,
                                                        dialogue_line) -> None:
    path = write_jsonl([dialogue_line("a")])  # no meta.context_dependent, no task list
    with pytest.raises(DatasetError, match="cannot classify dialogue 'a'.*no dataset.context_dep"):
        load_dialogues(dataset_cfg("custom", path=str(path), context_dependent_only=True),
                       limit=None, seed=0)


def test_context_dependent_only_uses_labels(dataset_cfg, write_jsonl, dialogue_line) -> None:
    path = write_jsonl(
        [
            dialogue_line("a", context_dependent=True),
            dialogue_line("b", context_dependent=False),
            dialogue_line("c", context_dependent=True),
        ]
    )
    cfg = dataset_cfg("custom", path=str(path), context_dependent_only=True)
    assert _ids(load_dialogues(cfg, limit=None, seed=0)) == ["a", "c"]


def test_composed_config_with_cli_style_overrides(tmp_path, dialogue_line) -> None:
    """The runner's call, on a config composed by Hydra like the CLI does."""
    from somabench.config import compose

    cfg = compose(
        [
            "dataset=mtbench101",
            "dataset.tasks=[CM,SI]",
            "dataset.sample=10",
            "limit=3",
            "shard=1/2",
            "seed=5",
        ]
    )
    kept = load_dialogues(cfg.dataset, limit=cfg.limit, seed=int(cfg.seed), shard=cfg.shard)
    whole = load_dialogues(cfg.dataset, limit=None, seed=5)
    assert len(whole) == 10 and kept == whole[1::2][:3]

    path = tmp_path / "mine.jsonl"
    path.write_text(dialogue_line("only") + "\n")
    cfg = compose(["dataset=custom", f"dataset.path={path}", "limit=null"])
    assert [d.id for d in load_dialogues(cfg.dataset, limit=cfg.limit, seed=0)] == ["only"]
