"""What each SOMA variant mined (issue 12): V(P), how far P moved, and whether variants differ.

Why a table of its own: the ablations (w/o ADL, w/o ExpW+ADL) change only mining weights, so
before comparing their similarity one must see that they mined *different* prompts. A committed
run once showed three "different" variants with identical mined prompts and F tokens; this
table makes that visible at a glance.

Artifact per family (only when the source holds SOMA mining records,
``adaptation.verbalized`` in dialogues.jsonl; Delta from ``adaptation.switch.acceptance.Delta``):

* ``mined_prompts_<tag>.md`` / ``.csv``: per variant, the dialogues it mined on (n), mean
  ``||P - P0|| / ||P0||``, mean share of V(P) tokens that changed from V(P0), J on the first
  step's turn (first -> last visit), the share of dialogues whose V(P) differs from every other
  variant's on the same dialogue, Delta of the acceptance test and the switches; then one row per
  (variant, dialogue) with the verbalized prompts themselves (the csv holds them in full).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from somabench.metrics import frame_markdown

PROMPT_CHARS = 60
"""V(P) characters per candidate shown in the markdown rows (the csv keeps every character)."""


def mining_rows(dialogues: pd.DataFrame, family: str) -> pd.DataFrame:
    """One row per (variant label, dialogue) that ran soft-prompt mining."""
    if dialogues.empty or "adaptation" not in dialogues:
        return pd.DataFrame()
    rows = []
    mine = dialogues[dialogues["family"] == family]
    for r in mine.itertuples(index=False):
        a = r.adaptation if isinstance(r.adaptation, dict) else {}
        if not a.get("verbalized"):
            continue
        final = a.get("mining_final") or {}
        switch = a.get("switch") or {}
        acceptance = switch.get("acceptance") or {}
        rows.append({
            "label": r.label, "dataset": r.dataset, "dialogue_id": r.dialogue_id,
            "M": len(a["verbalized"]), "steps": a.get("mining_steps"),
            "prompt_shift": _mean(a.get("prompt_shift")),
            "verbalized_changed": _mean(a.get("verbalized_changed")),
            "J_first": final.get("J_first"), "J_last": final.get("J_last"),
            "delta": acceptance.get("Delta"), "switch_turn": switch.get("switch_turn"),
            "verbalized": " | ".join(a["verbalized"]),
        })
    return pd.DataFrame(rows)


def _mean(values: Any) -> float:
    return float(np.mean(values)) if values else float("nan")


def distinct_share(rows: pd.DataFrame) -> dict[str, float]:
    """Per label: share of its dialogues whose V(P) differs from every other label's V(P) on the
    same dialogue (dialogues mined by one label only are left out)."""
    out: dict[str, float] = {}
    for label, mine in rows.groupby("label"):
        hits, n = 0, 0
        for r in mine.itertuples(index=False):
            others = rows[(rows["dialogue_id"] == r.dialogue_id) & (rows["dataset"] == r.dataset)
                          & (rows["label"] != label)]
            if others.empty:
                continue
            n += 1
            hits += int(all(o != r.verbalized for o in others["verbalized"]))
        out[str(label)] = hits / n if n else float("nan")
    return out


def summary_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Per label: n, mean [sd] of P's shift and V(P)'s change, J first -> last, distinct, switches."""
    distinct = distinct_share(rows)
    out = []
    for label, g in rows.groupby("label", sort=False):
        deltas = g["delta"].dropna().astype(float)
        out.append({
            "variant": label, "n": len(g),
            "‖P−P0‖/‖P0‖ mean (sd)": f"{g['prompt_shift'].mean():.3f} ({g['prompt_shift'].std(ddof=1):.3f})"
            if len(g) > 1 else f"{g['prompt_shift'].mean():.3f}",
            "V(P) changed % mean (sd)": f"{100 * g['verbalized_changed'].mean():.0f} "
                                        f"({100 * g['verbalized_changed'].std(ddof=1):.0f})"
            if len(g) > 1 else f"{100 * g['verbalized_changed'].mean():.0f}",
            "J first -> last (mean)": f"{g['J_first'].mean():.3f} -> {g['J_last'].mean():.3f}",
            "V(P) unlike every other variant %": 100 * distinct.get(str(label), float("nan")),
            "Delta mean [min, max]": (f"{deltas.mean():+.3f} [{deltas.min():+.3f}, {deltas.max():+.3f}]"
                                      if len(deltas) else "–"),
            "switched": f"{int(g['switch_turn'].notna().sum())}/{len(g)}",
        })
    return pd.DataFrame(out)


def add_mining_artifacts(result: Any, data: Any, cfg: Any, family: str, tag: str, out: Path) -> None:
    """Report hook (``build.EXTRA_ARTIFACTS``): ``mined_prompts_<tag>.md`` / ``.csv``."""
    from somabench.report.build import Artifact

    name = f"mined_prompts_{tag}"
    rows = mining_rows(data.dialogues, family)
    if rows.empty:
        result.skip(name, "no SOMA mining records (adaptation.verbalized) in this source")
        return
    rows = rows.sort_values(["label", "dataset", "dialogue_id"], kind="stable")
    shown = rows.assign(verbalized=rows["verbalized"].map(_clip),
                        switch_turn=rows["switch_turn"].map(
                            lambda v: "–" if pd.isna(v) else str(int(v))))[
        ["label", "dataset", "dialogue_id", "prompt_shift", "verbalized_changed", "J_first", "J_last",
         "delta", "switch_turn", "verbalized"]]
    md = [f"## Mined soft prompts per SOMA variant ({family})", "",
          "One seed; n = dialogues each variant mined on. P moves by ‖P−P0‖/‖P0‖; V(P) is P "
          "verbalized to its nearest G tokens (share of tokens unlike V(P0)). J is read on the "
          "first step's warm turn (first and last visit). Delta = Gap_old - Gap_new of the "
          "Cor. 1 acceptance test over the gate turns (recorded; blocking only when "
          "acceptance.required). No claim about which variant is better.", "",
          frame_markdown(summary_frame(rows), floatfmt=".0f"), "",
          f"Per dialogue (V(P) candidates separated by |, cut to {PROMPT_CHARS} characters each; "
          f"full text in {name}.csv):", "",
          frame_markdown(shown, floatfmt=".3f")]
    out.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out / f"{name}.md", out / f"{name}.csv"
    md_path.write_text("\n".join(md), encoding="utf-8")
    rows.to_csv(csv_path, index=False)
    result.written.append(Artifact(name, "extra (issue 12)", [md_path, csv_path],
                                   "mined prompts V(P) per SOMA variant, P's shift, distinctness"))


def _clip(text: str) -> str:
    parts = [p if len(p) <= PROMPT_CHARS else p[:PROMPT_CHARS - 1] + "…" for p in text.split(" | ")]
    return " \\| ".join(p.replace("|", "\\|").replace("\n", "⏎") for p in parts)
