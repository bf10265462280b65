"""Latency artifacts of the report: a table of TTFT / TPOT / end-to-end latency statistics per
method and dataset, and one figure with their distributions (CDF per method).

Why its own module: latency is summarised by ``somabench.latency`` (the same numbers as the run
summary and W&B); this only lays them out. Hooked into ``build.EXTRA_ARTIFACTS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from somabench.latency import LABELS, MEASURES, STATS, latency_summary
from somabench.metrics import frame_markdown

DECIMALS = ".3f"  # seconds; a tiny CPU turn takes ~0.1-10 s, a TPOT ~1e-2 s
NOTE = ("Per answered turn, as vLLM's serving benchmark: TTFT = time to the first token, TPOT = "
        "(last - first token) / (output tokens - 1), latency = end to end. All dialogues of a "
        "batch send their turn at the start of the runner's turn step: the wait for the other "
        "dialogues' planning and an earlier role's batch is included, a batched answer has the "
        "batch's first token step as its first token and is delivered when its batch returns "
        "(docs/reports.md, Latency). Cache hits count at the times recorded when they were "
        "generated. TTFT/TPOT are missing (–) where the backend did not stream. Load: the machine's "
        "1-minute load average when each dialogue ended (median and max over the method's "
        "dialogues; – where not recorded) and torch's CPU threads: compare latency only between rows run at a similar "
        "load, and against the machine's core count.")


def latency_rows(turns: pd.DataFrame, family: str) -> pd.DataFrame:
    """The family's answered turns with a measured latency (runs recorded before latency was
    measured have none)."""
    if turns.empty or "latency_s" not in turns:
        return pd.DataFrame()
    rows = turns[(turns["family"] == family) & (turns["status"] == "ok")]
    return rows[rows["latency_s"].notna()]


LOAD_COLUMNS = {"load_1m_median": "load 1-min median", "load_1m_max": "load 1-min max",
                "torch_threads": "torch threads"}
"""The machine's load while the method ran (per dialogue, when it ended): latency on a shared
CPU says as much about the load as about the method, so the two are printed side by side."""


def machine_load(dialogues: pd.DataFrame, family: str) -> pd.DataFrame:
    """Per (label, dataset): median and max of the 1-minute load average recorded at the end of
    each dialogue, and the torch thread counts seen (empty where no dialogue recorded them)."""
    if dialogues.empty or "load_1m" not in dialogues:
        return pd.DataFrame(columns=["label", "dataset", *LOAD_COLUMNS])
    rows = dialogues[(dialogues["family"] == family) & dialogues["load_1m"].notna()]
    grouped = rows.groupby(["label", "dataset"])
    threads = (grouped["torch_threads"].agg(lambda s: "/".join(str(int(v)) for v in sorted(s.dropna().unique())))
               if "torch_threads" in rows else grouped["load_1m"].agg(lambda s: ""))
    return pd.concat([grouped["load_1m"].median().rename("load_1m_median"),
                      grouped["load_1m"].max().rename("load_1m_max"), threads.rename("torch_threads")],
                     axis=1).reset_index()


def latency_table(rows: pd.DataFrame, cfg: Any, load: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (method label, dataset): n turns and mean / median / p90 / p99 of each measure, and
    the machine's load while the method ran (``load``, from :func:`machine_load`)."""
    from somabench.report import figures as figs

    table = latency_summary(rows, ["label", "dataset"])
    if load is not None and not load.empty:
        table = table.merge(load, on=["label", "dataset"], how="left")
    order = {label: i for i, label in enumerate(figs.order_labels(cfg, rows))}
    table = table.assign(_rank=table["label"].map(order)).sort_values(["_rank", "dataset"])
    table["dataset"] = table["dataset"].map(lambda d: figs.dataset_name(cfg, d))
    names = {f"{m}_s_{s}": f"{LABELS[m]} {s} (s)" for m in MEASURES for s in STATS}
    return (table.drop(columns="_rank").rename(columns={"label": "method", "latency_turns": "n turns",
                                                        **names, **LOAD_COLUMNS}).reset_index(drop=True))


def latency_figure(rows: pd.DataFrame, cfg: Any) -> Any:
    """One panel per measure: the empirical CDF of each method (all datasets of the family)."""
    import matplotlib.pyplot as plt

    from somabench.report import figures as figs

    labels = figs.order_labels(cfg, rows)
    colors = figs.label_colors(cfg, labels, rows)
    fig, axes = plt.subplots(1, len(MEASURES), layout="constrained", squeeze=False,
                             figsize=(cfg.figures.panel_width * len(MEASURES), cfg.figures.panel_height))
    for ax, measure in zip(axes[0], MEASURES, strict=True):
        for label in labels:
            values = np.sort(rows.loc[rows["label"] == label, f"{measure}_s"].dropna().to_numpy(float))
            if values.size:
                ax.step(values, np.arange(1, values.size + 1) / values.size, where="post",
                        color=colors[label], label=f"{label} (n={values.size})")
        ax.set_xlabel(f"{LABELS[measure]} (s)")
        ax.set_ylabel("share of turns")
        ax.set_ylim(0, 1.02)
        ax.set_title(LABELS[measure])
    handles, names = axes[0][-1].get_legend_handles_labels()
    if not handles:
        for ax in axes[0]:
            handles, names = ax.get_legend_handles_labels()
            if handles:
                break
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 3) or 1, frameon=False)
    return fig


def add_latency_artifacts(result: Any, data: Any, cfg: Any, family: str, tag: str, out: Path) -> None:
    """Report hook (``build.EXTRA_ARTIFACTS``): ``latency_<tag>.md``/``.csv`` and the figure
    ``latency_cdf_<tag>``."""
    from somabench.report import figures as figs
    from somabench.report.build import Artifact

    name, fig_name = f"latency_{tag}", f"latency_cdf_{tag}"
    rows = latency_rows(data.turns, family)
    if rows.empty:
        reason = "no turn with a measured latency (records written before latency was measured)"
        result.skip(name, reason)
        result.skip(fig_name, reason)
        return
    table = latency_table(rows, cfg, machine_load(data.dialogues, family))
    out.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out / f"{name}.md", out / f"{name}.csv"
    md_path.write_text(f"## Latency per method ({family})\n\n{NOTE}\n\n"
                       + frame_markdown(table, floatfmt=DECIMALS), encoding="utf-8")
    table.to_csv(csv_path, index=False)
    result.written.append(Artifact(name, "extra (latency)", [md_path, csv_path],
                                   "TTFT / TPOT / end-to-end latency: mean, median, p90, p99 per method"))
    fig = latency_figure(rows, cfg)
    result.written.append(Artifact(fig_name, "extra (latency)", figs.save(fig, out, fig_name, cfg),
                                   "CDF of TTFT, TPOT and end-to-end latency per method"))


__all__ = ["LOAD_COLUMNS", "add_latency_artifacts", "latency_figure", "latency_rows", "latency_table",
           "machine_load"]
