"""The per-class gallery of ``cam --gallery``: a seeded pick of each class's images, and the figures that put
inputs over their maps (green: predicted right, red: wrong)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import plots, runs
from ..data import list_images
from ..errors import ConfigError, DataError
from ..plots import figure_png
from ..scanners import ScanOptions
from .gradcam import Explanation
from .render import as_rgb, overlay

GalleryCell = tuple[int, str, np.ndarray, Explanation]  # (true class, path, image, explanation)


def method_label(method: str) -> str:
    """How figures name a method."""
    return {"gradcam++": "Grad-CAM++", "layercam": "LayerCAM"}.get(method, "Grad-CAM")


def gallery_picks(folder: str | Path, class_names: Sequence[str], config_classes, per_class: int,
                  seed: int, scan_options: ScanOptions = ScanOptions()) -> dict[int, list[str]]:
    """Seeded random order of each class's images in a folder of class sub-folders: class index -> paths."""
    if per_class < 1:
        raise ConfigError(f"--per-class must be at least 1, got {per_class}")
    listing = list_images(folder, config_classes, require_all=False, scan_options=scan_options)
    unknown = [c for c in listing.class_names if c not in class_names]
    if unknown:
        raise DataError(f"{folder} has classes {', '.join(unknown)} that the model does not know; "
                        f"its classes are {', '.join(class_names)}")
    rng = np.random.default_rng(seed)
    order = {}
    for label, cls in enumerate(listing.class_names):
        paths = [p for p, y in zip(listing.paths, listing.labels, strict=True) if y == label]
        if paths:
            order[list(class_names).index(cls)] = [paths[i] for i in rng.permutation(len(paths))]
    return order


def write_gallery(out: Path, cells: list[GalleryCell], class_names: Sequence[str], method: str,
                  layer: str) -> list[str]:
    """gallery_<class>.png (inputs over overlays, one column per image) and gallery.png (a row per class)."""
    label = method_label(method)
    written, overview_rows, overview_labels = [], [], []
    for c, cls in enumerate(class_names):
        mine = [(path, img, e) for true, path, img, e in cells if true == c]
        if not mine:
            continue
        tiles = [_tile(img, e, class_names, c) for _, img, e in mine]
        right = sum(t[2] for t in tiles)
        inputs = [(as_rgb(img), Path(path).name, None) for path, img, _ in mine]
        fig = plots.image_grid_figure([inputs, tiles], ["input", label],
                                      f"{cls}: {right}/{len(tiles)} predicted correctly ({label} at {layer})")
        name = f"gallery_{cls}.png"
        runs.atomic_write_bytes(out / name, figure_png(fig))
        written.append(name)
        overview_rows.append(tiles)
        overview_labels.append(f"true {cls}")
    if overview_rows:
        fig = plots.image_grid_figure(overview_rows, overview_labels,
                                      f"{label} at {layer}: green = correct, red = wrong")
        runs.atomic_write_bytes(out / "gallery.png", figure_png(fig))
        written.append("gallery.png")
    return written


def _tile(image: np.ndarray, e: Explanation, class_names: Sequence[str], true: int) -> tuple:
    """(overlay, caption, correct) for one gallery cell."""
    ok = e.predicted == true
    caption = f"{'right' if ok else 'WRONG'}: {class_names[e.predicted]} {e.probs[e.predicted]:.2f}"
    if e.class_index != e.predicted:
        caption += f"\nmap: {class_names[e.class_index]}"
    return overlay(image, e.heatmap), caption, ok
