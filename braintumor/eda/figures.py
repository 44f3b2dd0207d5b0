"""The figures of `eda`: class balance, pixel histograms, sample grid, duplicate montage and distances."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import dedup, plots
from ..dedup import DatasetSummary
from ..errors import DataError
from ..images import decode, to_array
from ..plots import atomic_save_figure
from .confound_report import sample_cells
from .stats import Combined, example_pairs

MONTAGE_DISTANCES = (0, 2, 4, 6, 8, 10)  # example pairs drawn at these distances
THUMB = 112  # pixels per image in the sample grid and the montage


def _thumb(path: str, size: int = THUMB) -> np.ndarray:
    """A square (size, size, 3) uint8 thumbnail for figures; a gray square if the file cannot be read now."""
    try:
        return to_array(decode(path), size, 3)
    except DataError:
        return np.full((size, size, 3), 128, np.uint8)


def sample_paths(split: DatasetSummary, per_class: int, seed: int) -> dict[str, list[str]]:
    """A seeded choice of ``per_class`` images of each class (fewer when a class is smaller)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, c in enumerate(split.class_names):
        idx = np.flatnonzero(split.labels == k)
        out[c] = [split.paths[i] for i in np.sort(rng.choice(idx, min(per_class, len(idx)), replace=False))]
    return out


def write_figures(out: Path, splits: list[DatasetSummary], summary: dict[str, Any], c: Combined,
                  samples_per_class: int, seed: int, montage_distances: Sequence[int] = MONTAGE_DISTANCES,
                  pairs_per_distance: int = 4) -> None:
    """class_distribution, mean_pixel_histogram, samples, near_duplicates and nearest_distance PNGs."""
    atomic_save_figure(plots.class_distribution_figure(summary["per_class"]), out / "class_distribution.png")
    means = {sp.name: {cl: sp.means[sp.labels == k] for k, cl in enumerate(sp.class_names)} for sp in splits}
    atomic_save_figure(plots.overlaid_histograms_figure(means, "mean pixel value per image (0-255)",
                                                        "mean pixel value per image, by class"),
                       out / "mean_pixel_histogram.png")
    if "sources" in summary:
        by = summary["sources"]
        atomic_save_figure(plots.class_distribution_figure({n: v["per_class"] for n, v in by.items()},
                                                           "images per class, by source"),
                           out / "class_distribution_by_source.png")
        src = np.asarray(splits[0].sources)
        sp = splits[0]
        per = {n: {cl: sp.means[(sp.labels == k) & (src == n)] for k, cl in enumerate(sp.class_names)} for n in by}
        atomic_save_figure(plots.overlaid_histograms_figure(per, "mean pixel value per image (0-255)",
                                                            "mean pixel value per image, by class, one panel per "
                                                            "source"),
                           out / "mean_pixel_histogram_by_source.png")
    chosen = sample_paths(splits[0], samples_per_class, seed)
    grid = [[_thumb(p) for p in paths] for paths in chosen.values()]
    title = f"{samples_per_class} random images per class ({splits[0].name}, seed {seed})"
    atomic_save_figure(plots.sample_grid_figure(grid, list(chosen), title), out / "samples.png")
    examples = example_pairs(c, montage_distances, pairs_per_distance, seed)
    rows = []
    for d, pairs in examples.items():
        cells = []
        for i, j, identical in pairs:
            cap = f"{_short(c, i)}\n{_short(c, j)}" + ("\nidentical pixels" if identical else "")
            cells.append((_thumb(c.paths[i]), _thumb(c.paths[j]), cap))
        rows.append((f"d = {d}" + ("  (<= threshold)" if d <= summary["near_threshold"] else ""), cells))
    title = f"example pairs by pHash distance (bits); threshold {summary['near_threshold']}"
    atomic_save_figure(plots.pair_montage_figure(rows, pairs_per_distance, title),
                       out / "near_duplicates.png")
    nn = {sp.name: dedup.nearest(sp.hashes)[0] for sp in splits}
    if len(splits) > 1:
        nn[f"{splits[1].name} -> {splits[0].name}"] = dedup.nearest(splits[1].hashes, splits[0].hashes)[0]
    atomic_save_figure(plots.distance_histogram_figure(nn, summary["near_threshold"]),
                       out / "nearest_distance.png")


def _short(c: Combined, i: int) -> str:
    s = c.splits[c.split_of[i]]
    return f"{s.name}/{Path(c.paths[i]).parent.name}/{Path(c.paths[i]).stem}"[-34:]



def write_confound_figures(out: Path, split: DatasetSummary, table: dict[str, Any], values: dict[str, list[str]],
                           per_cell: int, seed: int) -> None:
    """confounds_<property>.png: sample images per class (row) and value (column), one figure per property."""
    for prop, row in table["properties"].items():
        chosen = sample_cells(split, values[prop], per_cell, seed)
        cells = {key: [_thumb(p, 80) for p in paths] for key, paths in chosen.items()}
        title = (f"{prop} (Cramer's V {row['v'] if row['v'] is not None else '-'}): samples per class and value, "
                 "with the number of images")
        fig = plots.property_grid_figure(cells, list(split.class_names), row["values"], row["counts"], title)
        atomic_save_figure(fig, out / f"confounds_{prop}.png")
