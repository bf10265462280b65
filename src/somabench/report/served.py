"""The served-turn figures: similarity per turn split by the model that served the turn (a
hook of :func:`somabench.report.build.build_report`, ``EXTRA_ARTIFACTS``).

Why its own module: a hook imports the builder (``Artifact``), so it cannot live in
``figures``, which the builder imports (that was an import cycle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from somabench.metrics import panels
from somabench.report.build import Artifact, _tag
from somabench.report.figures import (
    Skip,
    save,
    served_turn_figure,
    served_turn_points,
    served_turn_values,
)
from somabench.report.tables import StatsKnobs


def add_served_turn_artifacts(result: Any, data: Any, cfg: Any, family: str, tag: str, out: Path) -> None:
    """``fig_similarity_per_turn_<tag>_<panel>``: similarity per turn split by who served it,
    with its points in a ``.csv`` (a hook of :func:`somabench.report.build.build_report`,
    ``EXTRA_ARTIFACTS``)."""
    knobs = StatsKnobs.from_cfg(cfg.stats)
    scores = data.scores[data.scores["family"] == family] if not data.scores.empty else data.scores
    turns = data.turns[data.turns["family"] == family] if not data.turns.empty else data.turns
    for metric, spec in dict(cfg.score_tables).items():
        for panel in panels(scores, metric):
            name = f"fig_{metric}_per_turn_{tag}_{_tag(panel)}"
            values = served_turn_values(scores, turns, panel=panel, metric=metric)
            points = served_turn_points(values, knobs)
            try:
                fig = served_turn_figure(points, cfg, f"{spec.title} per turn ({family}, panel {panel})",
                                         str(spec.unit), knobs)
            except Skip as exc:
                result.skip(name, str(exc))
                continue
            paths = save(fig, out, name, cfg)
            points.drop(columns=["values"]).to_csv(out / f"{name}.csv", index=False)
            result.written.append(Artifact(name, "extra (issue 23)", [*paths, out / f"{name}.csv"],
                                           f"{spec.unit} per turn, split by the model that served the turn"))
