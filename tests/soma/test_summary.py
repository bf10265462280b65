"""Extractive summary: budget, original order, relevance/redundancy, centroid refresh."""

from __future__ import annotations

import numpy as np
import pytest

from somabench.soma.summary import SummaryConfig, split_sentences, summarize

# A deterministic phi for the *selection logic* (the encoder itself is tested elsewhere):
# each sentence names its topic word, mapped to a fixed direction.
TOPICS = {"apple": [1, 0, 0], "pear": [0.9, 0.436, 0], "train": [0, 1, 0], "boat": [0, 0, 1]}


def embed(texts: list[str]) -> np.ndarray:
    rows = []
    for text in texts:
        vec = np.zeros(3)
        for word, direction in TOPICS.items():
            if word in text.lower():
                vec += np.asarray(direction, dtype=float)
        rows.append(vec / (np.linalg.norm(vec) or 1.0))
    return np.stack(rows)


def words(text: str) -> int:
    return len(text.split())


def cfg(**over: object) -> SummaryConfig:
    base = dict(budget_tokens=12, verbatim_turns=1, w_relevance=1.0, w_representative=0.5,
                w_redundancy=0.7, min_sentence_chars=3, include_user=True,
                include_assistant=True, header="S: ", separator=" ")
    base.update(over)
    return SummaryConfig(**base)  # type: ignore[arg-type]


PAIRS = [
    ("I like the apple pie.", "The apple is red. Trains are fast."),
    ("Tell me about the boat trip.", "The boat left at noon. A pear tree grew nearby."),
    ("What about the train?", "The train was late by an hour."),
]


def test_split_sentences() -> None:
    assert split_sentences("One two. Three? Four!\nFive six", 3) == [
        "One two.", "Three?", "Four!", "Five six"]
    assert split_sentences("a. bb. ccc.", 3) == ["bb.", "ccc."]


@pytest.mark.parametrize("budget", [0, 4, 8, 12, 20, 200])
def test_budget_respected_and_order_preserved(budget: int) -> None:
    s = summarize(PAIRS, "apple recipes", cfg(budget_tokens=budget), embed, words)
    assert s.tokens <= budget and words(s.text) == s.tokens
    assert s.positions == sorted(s.positions)  # dialogue order
    all_sentences = [x for u, a in PAIRS for x in split_sentences(u, 3) + split_sentences(a, 3)]
    idx = [all_sentences.index(x) for x in s.sentences]
    assert idx == sorted(idx)


def test_relevance_picks_query_topic_and_avoids_redundancy() -> None:
    s = summarize(PAIRS, "the boat", cfg(budget_tokens=6, w_representative=0.0), embed, words)
    assert s.sentences and "boat" in s.sentences[0].lower()
    # two boat sentences exist; with strong redundancy only one boat sentence is picked
    s = summarize(PAIRS, "the boat", cfg(budget_tokens=11, w_representative=0.0,
                                         w_redundancy=5.0), embed, words)
    assert sum("boat" in x.lower() for x in s.sentences) == 1


def test_centroid_refresh_moves_representativeness() -> None:
    # no relevance: only the centroid decides; from turn 2 on the centroid is "train"
    c = cfg(budget_tokens=6, w_relevance=0.0, w_representative=1.0, w_redundancy=0.0)
    late = summarize(PAIRS, "x", c, embed, words, centroid_from=2)
    assert "train" in late.sentences[0].lower()
    early = summarize(PAIRS[:1], "x", c, embed, words, centroid_from=0)
    assert "apple" in early.text.lower()


def test_empty_history() -> None:
    s = summarize([], "q", cfg(), embed, words)
    assert s.text == "" and s.tokens == 0
