"""The context-dependence rule (paper App. B.1; somabench/data/context.py) on hand-made and
bundled data: the meta label wins, else the dataset's task list; negative-control tasks are
never dependent; unclassifiable dialogues are an error; switchable-session counts."""

from __future__ import annotations

from collections import Counter

import pytest

from somabench.data import load_dialogues
from somabench.data.context import ContextRule, session_role, switchable
from somabench.data.schema import DatasetError, Dialogue, Turn


def dialogue(id_: str, **meta: object) -> Dialogue:
    return Dialogue(id=id_, dataset="custom", turns=(Turn(user="q", assistant="a"),), meta=meta)


def test_rule_label_first_then_task_then_error() -> None:
    rule = ContextRule.from_cfg({"context_dependent_tasks": ["SI", "AR"],
                                 "negative_control_tasks": ["math"]})
    assert rule.classify(dialogue("a", task="SI"), "x") == (True, "task")
    assert rule.classify(dialogue("b", task="TS"), "x") == (False, "task")
    # a boolean label decides even against the task list
    assert rule.classify(dialogue("c", task="TS", context_dependent=True), "x") == (True, "meta")
    assert rule.classify(dialogue("d", task="SI", context_dependent=False), "x") == (False, "meta")
    assert rule.classify(dialogue("e", task="math"), "x") == (False, "task")
    assert rule.is_negative_control(dialogue("e", task="math"))
    with pytest.raises(DatasetError, match="cannot classify dialogue 'f' of 'x'.*no string meta.task"):
        rule.classify(dialogue("f"), "x")
    with pytest.raises(DatasetError, match="declares no dataset.context_dependent_tasks"):
        ContextRule.from_cfg({}).classify(dialogue("g", task="SI"), "x")


def test_rule_config_errors() -> None:
    with pytest.raises(DatasetError, match="both in context_dependent_tasks and negative_control"):
        ContextRule.from_cfg({"context_dependent_tasks": ["math"], "negative_control_tasks": ["math"]})
    with pytest.raises(DatasetError, match="dataset.context_dependent_tasks='SI': expected null or a list"):
        ContextRule.from_cfg({"context_dependent_tasks": "SI"})


def test_session_role_and_switchable_count() -> None:
    rule = ContextRule.from_cfg({"context_dependent_tasks": ["MR"], "negative_control_tasks": ["math"]})
    assert session_role([dialogue("a", task="math"), dialogue("b", task="math")], rule) == "negative_control"
    assert session_role([dialogue("a", task="math"), dialogue("b", task="MR")], rule) == "study"
    # W + max(m, |B|) + 1 = 3 + 2 + 1 = 6 turns: sessions of 8, 6 qualify, 5 does not
    assert switchable([8, 6, 5, 2], 6) == 2
    assert switchable([8, 6], None) == 0


def test_bundled_filters_match_the_declared_tasks(dataset_cfg) -> None:
    kept = load_dialogues(dataset_cfg("mtbench101", context_dependent_only=True), limit=None, seed=0)
    assert set(Counter(d.meta["task"] for d in kept)) <= {"SI", "PI", "AR", "CM", "CR", "FR", "GR",
                                                          "IC", "MR", "SA", "SC"}
    assert not any(d.meta["task"] in ("TS", "CC") for d in kept)
    math = load_dialogues(dataset_cfg("mathmt", context_dependent_only=True), limit=None, seed=0)
    assert math and {d.meta["task"] for d in math} == {"MR"}  # MATH sessions: the negative control
    remedi = load_dialogues(dataset_cfg("remedi", context_dependent_only=True, min_turns=8),
                            limit=None, seed=0)
    assert len(remedi) == 52  # every consultation is context dependent; 52 have >= 8 turns
