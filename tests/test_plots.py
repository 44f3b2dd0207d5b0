"""plots.py: each figure builds from plain data and saves as a PNG, atomically."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from braintumor import plots
from tests.conftest import assert_png_figure

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_figure_builds_and_saves(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    heat = rng.random((16, 16)).astype(np.float32)
    figures = {
        "cm": plots.confusion_matrix_figure(np.array([[3, 1], [0, 4]]), ["a", "b"]),
        "cm_norm": plots.confusion_matrix_figure(np.array([[3, 1], [0, 0]]), ["a", "b"], normalize=True),
        "history": plots.history_figure({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.8],
                                         "val_accuracy": [0.4, 0.7]}, "t"),
        "bars": plots.bar_figure(["f1", "f2"], [0.8, 0.9], [(0.7, 0.9), (float("nan"), float("nan"))]),
        "classes": plots.class_distribution_figure({"train": {"a": 3, "b": 0}, "test": {"a": 1, "b": 2}}),
        "hist": plots.overlaid_histograms_figure({"train": {"a": rng.random(5) * 255, "b": np.zeros(0)}}, "x"),
        "grid": plots.sample_grid_figure([[img, img], [img]], ["a", "b"], "samples"),
        "pairs": plots.pair_montage_figure([("d = 0", [(img, img, "x\ny")]), ("d = 2", [])], 2, "pairs"),
        "distances": plots.distance_histogram_figure({"train": np.array([0, 2, 4, 255], np.uint8)}, 2),
        "panel": plots.cam_panel_figure(img, heat, img, "cam"),
        "image_grid": plots.image_grid_figure([[(img, "ok", True), (img, "bad", False)]], ["row"], "g"),
    }
    # (panels, images shown, bars) each figure must hold: a colour bar is a panel; a dropped panel or bar fails
    expected = {"cm": (2, 1, 0), "cm_norm": (2, 1, 0), "history": (2, 0, 0), "bars": (1, 0, 2), "classes": (1, 0, 4),
                "hist": (1, 0, 2), "grid": (2, 2, 0), "pairs": (2, 1, 0), "distances": (1, 0, 33),
                "panel": (4, 3, 0), "image_grid": (2, 2, 0)}
    for name, fig in figures.items():
        assert isinstance(fig, Figure), name
        held = (len(fig.axes), sum(len(a.images) for a in fig.axes), sum(len(a.patches) for a in fig.axes))
        assert held == expected[name], (name, held)
        plots.atomic_save_figure(fig, tmp_path / "plots" / f"{name}.png")
        assert_png_figure(tmp_path / "plots" / f"{name}.png")  # drawn at a readable size, not blank
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(f"{n}.png" for n in figures)


def test_normalized_confusion_matrix_shows_row_shares():
    fig = plots.confusion_matrix_figure(np.array([[3, 1], [0, 4]]), ["a", "b"], normalize=True)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "0.75" in texts and "0.25" in texts and "1.00" in texts


def test_figure_png_is_png_bytes():
    fig = plots.bar_figure(["a"], [0.5])
    assert plots.figure_png(fig)[:8] == PNG
