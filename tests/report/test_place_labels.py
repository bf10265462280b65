"""figures.place_labels: crowded markers get labels that overlap no other label, cover no other
marker, and are drawn in their marker's colour with a leader line (the study figure's labels
had named the wrong points: "Original" beside the kvpress control's marker)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from somabench.report.figures import MARKER_PAD, place_labels  # noqa: E402


def test_crowded_labels_cover_no_other_marker_and_name_their_own() -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    points = [(1.0, 100.0, "Original\nn=30"), (1.0, 92.0, "control\nn=30"),
              (1.0, 89.3, "prefix cache\nn=30"), (0.96, 78.1, "press A\nn=30"),
              (0.91, 75.8, "press B\nn=30"), (13.6, 98.4, "SOMA\nn=30")]
    colors = ["red", "purple", "blue", "magenta", "orchid", "navy"]
    for (x, y, _), c in zip(points, colors, strict=True):
        ax.plot([x], [y], "o", color=c)
    ax.set_xlim(0, 15)
    ax.set_ylim(60, 102)
    place_labels(ax, points, colors=colors)
    renderer = fig.canvas.get_renderer()
    notes = ax.texts
    assert [n.get_text() for n in notes] == [t for _, _, t in points]
    boxes = [n.get_window_extent(renderer) for n in notes]
    markers = [ax.transData.transform((x, y)) for x, y, _ in points]
    for i, (note, box) in enumerate(zip(notes, boxes, strict=True)):
        assert note.get_color() == colors[i] and note.arrow_patch is not None
        for j, (mx, my) in enumerate(markers):
            if j != i:
                assert not (box.x0 - MARKER_PAD <= mx <= box.x1 + MARKER_PAD
                            and box.y0 - MARKER_PAD <= my <= box.y1 + MARKER_PAD), (note.get_text(), j)
        for other in boxes[:i]:
            assert not box.overlaps(other), note.get_text()
    plt.close(fig)
