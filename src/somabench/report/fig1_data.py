"""Fig. 1 as the paper draws it: a property of the data, not of a run.

Why: the paper's Fig. 1 is the mean token count per turn (user message + the dataset's
reference assistant text) over every dialogue of each dataset, normalised by turn 1. Counting
served completions instead (capped by ``max_new_tokens``) and user words (whitespace: Chinese
ReMeDi has none) flattens the curve and leaves one dialogue per point. Here every bundled
dialogue is tokenized with F's tokenizer (the tiny F's by default: cheap, offline, no
generation); the counts are written next to the figure (``data/fig1_tokens_per_turn.csv``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from somabench.metrics import data_tokens_per_turn, relative_to_first_turn

log = logging.getLogger(__name__)

DATA_FILE = "data/fig1_tokens_per_turn.csv"


class Fig1Unavailable(RuntimeError):
    """The tokenizer or the datasets cannot be loaded (the message says which and why)."""


def load_tokenizer(fcfg: Any, cache_dir: str | None) -> tuple[Any, str]:
    """F's tokenizer from ``report.fig1.tokenizer`` (an offline asset name or a local path)."""
    from transformers import AutoTokenizer

    source = str(fcfg.tokenizer)
    path = Path(source)
    if not path.exists():
        from somabench import assets

        try:
            path = assets.resolve(source, cache_dir, fetch_if_missing=False)
        except Exception as exc:  # noqa: BLE001 - reported as the skip reason
            raise Fig1Unavailable(f"tokenizer '{source}' (report.fig1.tokenizer): {exc}") from exc
    return AutoTokenizer.from_pretrained(str(path)), source


_MEMO: dict[tuple[str, tuple[str, ...]], tuple[pd.DataFrame, str]] = {}


def tokens_per_turn(fcfg: Any, cache_dir: str | None) -> tuple[pd.DataFrame, str]:
    """Per (dataset, dialogue, turn) token counts over every dialogue of each dataset in
    ``report.fig1.datasets`` (all of them: no limit, no sample, no truncation); memoized per
    process (the data and tokenizer do not change between reports)."""
    key = (str(fcfg.tokenizer), tuple(str(d) for d in fcfg.datasets))
    if key not in _MEMO:
        _MEMO[key] = _tokens_per_turn(fcfg, cache_dir)
    frame, source = _MEMO[key]
    return frame.copy(), source


def _tokens_per_turn(fcfg: Any, cache_dir: str | None) -> tuple[pd.DataFrame, str]:
    from somabench.config import compose
    from somabench.data import load_dialogues

    tokenizer, source = load_tokenizer(fcfg, cache_dir)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    frames = []
    for name in fcfg.datasets:
        dcfg = compose([f"dataset={name}"]).dataset
        try:
            dialogues = load_dialogues(dcfg, limit=None, seed=0)
        except Exception as exc:  # noqa: BLE001 - a dataset that is not offline is skipped, said
            log.warning("Fig. 1: dataset %s not loaded (%s); left out", name, exc)
            continue
        frames.append(data_tokens_per_turn(dialogues, count))
    if not frames:
        raise Fig1Unavailable(f"none of report.fig1.datasets={list(fcfg.datasets)} could be loaded")
    return pd.concat(frames, ignore_index=True), source


def relative(frame: pd.DataFrame, max_turn: int | None, min_n: int) -> pd.DataFrame:
    """Mean tokens per turn / mean at turn 1 per dataset, with n; points with fewer than
    ``min_n`` dialogues and turns beyond ``max_turn`` are dropped (they are noise)."""
    rel = relative_to_first_turn(frame, "tokens")
    rel = rel[rel["n"] >= int(min_n)]
    if max_turn is not None:
        rel = rel[rel["turn"] < int(max_turn)]
    return rel


def build(fcfg: Any, cache_dir: str | None, out: Path) -> tuple[pd.DataFrame, str]:
    """Counts (also written to ``out/data/fig1_tokens_per_turn.csv`` with the tokenizer name)."""
    frame, source = tokens_per_turn(fcfg, cache_dir)
    frame = frame.assign(tokenizer=source)
    path = out / DATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame, source
