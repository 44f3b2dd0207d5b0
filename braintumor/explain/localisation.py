"""Where a heatmap looks against annotated tumour regions: annotation readers and pure localisation scores.

Three annotation forms, all resolved to one boolean region per image at any resolution:
- a CSV ``path,class,x_center,y_center,width,height`` (fractions of the image: the YOLO convention);
- a folder of YOLO label files (``<image stem>.txt``, lines ``class_id xc yc w h``; class names from a
  ``classes.txt`` beside them, else the model's classes);
- binary mask PNGs (``<image stem>_mask.png`` beside the image, or ``<stem>.png`` in a masks folder).

Scores (per image; the report averages them):
- **pointing game** (Zhang et al. 2016): is the heatmap's peak inside the region; ``exact`` and with a tolerance
  (the box grown on every side by ``tolerance`` x the image side, 0.15 by default). Tied peaks score the share of
  them inside; a flat heatmap (all zero, or constant) has no peak and counts as a miss.
- **energy ratio**: the share of the heatmap's mass inside the region divided by the region's share of the image
  (1.0 = what an even spread scores; a perfect map scores 1 / area). An all-zero heatmap says nothing and is
  scored as an even spread (1.0).
- the same two for a **centre prior**: a Gaussian at the image centre with sigma = a quarter of the image side,
  which never looks at the image. A model that does not beat it has not shown that it looks at the tumour.

Written here, not taken from a library: the explainability packages (tf-keras-vis, captum, quantus) either
compute the maps (we have those) or score against segmentation masks in their own tensor formats, and none reads
YOLO boxes; the scores are a few lines of numpy each.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import maximum_filter

from ..data import IMAGE_EXTENSIONS
from ..metrics import interval_info, ratio_ci

PRIOR_SIGMA = 0.25  # centre prior: sigma as a fraction of the image side
TOLERANCE = 0.15  # pointing-game tolerance: the box grown on every side by this fraction of the image side


@dataclass(frozen=True)
class BoxFraction:
    """A box as fractions of the image (YOLO convention: centre, then size)."""

    x_center: float
    y_center: float
    width: float
    height: float

    def mask(self, h: int, w: int, grow: float = 0.0) -> np.ndarray:
        """(h, w) bool: the pixels whose centres lie in the box grown on every side by ``grow`` x the side."""
        ys = (np.arange(h) + 0.5) / h
        xs = (np.arange(w) + 0.5) / w
        in_y = np.abs(ys - self.y_center) <= self.height / 2 + grow
        in_x = np.abs(xs - self.x_center) <= self.width / 2 + grow
        m = in_y[:, None] & in_x[None, :]
        if not m.any():  # a box thinner than a pixel still covers the pixel under its centre
            m[min(h - 1, int(self.y_center * h)), min(w - 1, int(self.x_center * w))] = True
        return m


@dataclass
class Region:
    """The annotated tumour of one image: boxes, or a mask file scored by its own pixels."""

    boxes: list[BoxFraction] = field(default_factory=list)
    mask_path: str | None = None
    label: str | None = None  # the class the annotation names, when it names one

    def mask(self, h: int, w: int, grow: float = 0.0) -> np.ndarray:
        """(h, w) bool region at the heatmap's resolution (a mask is resized nearest; growing dilates it)."""
        if self.mask_path is not None:
            with Image.open(self.mask_path) as img:
                m = np.asarray(img.convert("L").resize((w, h), Image.NEAREST)) > 127
            if grow > 0:
                m = _dilate(m, int(round(grow * h)), int(round(grow * w)))
            return m
        out = np.zeros((h, w), bool)
        for b in self.boxes:
            out |= b.mask(h, w, grow)
        return out


def _dilate(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Grow a boolean mask by a (2dy+1) x (2dx+1) rectangle."""
    return maximum_filter(m, size=(2 * dy + 1, 2 * dx + 1)) if (dy or dx) else m


@dataclass
class Annotations:
    """Regions by image path (resolved, as str) and every row or file that could not be used, with why."""

    regions: dict[str, Region] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (row or file, reason)


def _fraction(value: str, name: str) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} {value} is not a fraction from 0 to 1 (boxes are fractions of the image)")
    return v


def _box(xc: str, yc: str, w: str, h: str) -> BoxFraction:
    box = BoxFraction(_fraction(xc, "x_center"), _fraction(yc, "y_center"), _fraction(w, "width"),
                      _fraction(h, "height"))
    if box.width <= 0 or box.height <= 0:
        raise ValueError("width and height must be above 0")
    return box


def read_boxes_csv(path: str | Path, root: str | Path | None = None) -> Annotations:
    """A ``path,class,x_center,y_center,width,height`` CSV; relative paths are taken from ``root`` (default: the
    CSV's folder). Several rows for one image add boxes."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    out = Annotations()
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        needed = {"path", "x_center", "y_center", "width", "height"}
        missing = needed - set(reader.fieldnames or [])
        if missing:
            out.problems.append((str(path), f"missing column(s) {', '.join(sorted(missing))}; expected "
                                            "path,class,x_center,y_center,width,height"))
            return out
        for line, row in enumerate(reader, start=2):
            where = f"{path.name} line {line}"
            try:
                box = _box(row["x_center"], row["y_center"], row["width"], row["height"])
            except (TypeError, ValueError) as e:
                out.problems.append((where, f"malformed box: {e}"))
                continue
            image = Path(row["path"] or "")
            image = image if image.is_absolute() else root / image
            if not row["path"] or not image.is_file():
                out.problems.append((where, f"image {image} does not exist"))
                continue
            region = out.regions.setdefault(str(image), Region(label=(row.get("class") or None)))
            region.boxes.append(box)
    return out


def read_yolo_folder(labels: str | Path, images: str | Path, class_names: Sequence[str]) -> Annotations:
    """YOLO label files (``<stem>.txt``) for the images under ``images`` (searched recursively by stem).

    Class ids index ``classes.txt`` beside the labels when it exists, else ``class_names``.
    """
    labels = Path(labels)
    names_file = labels / "classes.txt"
    names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()] if names_file.is_file() \
        else list(class_names)
    by_stem = _images_by_stem(images)
    out = Annotations()
    for txt in sorted(labels.glob("*.txt")):
        if txt.name == "classes.txt":
            continue
        image = by_stem.get(txt.stem)
        if image is None:
            out.problems.append((txt.name, f"no image named {txt.stem}.* under {images}"))
            continue
        region = Region()
        for n, line in enumerate(txt.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                if len(parts) != 5:
                    raise ValueError(f"expected 'class_id x_center y_center width height', got {line.strip()!r}")
                cid = int(parts[0])
                if not 0 <= cid < len(names):
                    raise ValueError(f"class id {cid} is not in 0..{len(names) - 1} ({', '.join(names)})")
                region.boxes.append(_box(*parts[1:]))
                region.label = names[cid]
            except ValueError as e:
                out.problems.append((f"{txt.name} line {n}", f"malformed: {e}"))
        if region.boxes:
            out.regions[image] = region
        elif not any(p[0].startswith(txt.name) for p in out.problems):
            out.problems.append((txt.name, "no boxes in the file"))
    return out


def read_masks(images: str | Path, masks: str | Path | None = None) -> Annotations:
    """Binary mask PNGs: ``<stem>_mask.png`` beside each image, or ``<stem>.png`` / ``<stem>_mask.png`` in
    ``masks``. Images without a mask are not listed as problems (only masks without an image are)."""
    by_stem = _images_by_stem(images)
    out = Annotations()
    candidates = sorted(Path(masks).rglob("*.png")) if masks else sorted(Path(images).rglob("*_mask.png"))
    for m in candidates:
        stem = m.stem[:-5] if m.stem.endswith("_mask") else m.stem
        image = by_stem.get(stem)
        if image is None:
            out.problems.append((m.name, f"no image named {stem}.* under {images}"))
            continue
        try:
            with Image.open(m) as img:
                if not (np.asarray(img.convert("L")) > 127).any():
                    out.problems.append((m.name, "mask is empty (no pixel above 127)"))
                    continue
        except OSError as e:
            out.problems.append((m.name, f"not a readable PNG ({e})"))
            continue
        out.regions[image] = Region(mask_path=str(m))
    return out


def _images_by_stem(folder: str | Path) -> dict[str, str]:
    return {p.stem: str(p) for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.stem.endswith("_mask")}


# --- scores -----------------------------------------------------------------------------------------------


def centre_prior(h: int, w: int, sigma: float = PRIOR_SIGMA) -> np.ndarray:
    """(h, w) float32 in [0, 1]: a Gaussian at the image centre, sigma = ``sigma`` x the side."""
    ys = ((np.arange(h) + 0.5) / h - 0.5)[:, None]
    xs = ((np.arange(w) + 0.5) / w - 0.5)[None, :]
    return np.exp(-(ys ** 2 + xs ** 2) / (2 * sigma ** 2)).astype(np.float32)


def pointing(heatmap: np.ndarray, region: np.ndarray) -> float:
    """1.0 when the heatmap's maximum lies in ``region`` (same shape), 0.0 when outside. Ties (several pixels at
    the maximum: a fused map has one peak per layer, an upsampled plateau several) score the share of them
    inside, what breaking the tie at random would score on average, so a map cannot hit by peaking everywhere.
    A flat map (all zero, or constant) has no peak: 0.0."""
    top = float(heatmap.max()) if heatmap.size else 0.0
    if not (top > 0 and np.isfinite(top)) or top <= float(heatmap.min()):
        return 0.0
    return float(region[heatmap >= top].mean())


def energy_ratio(heatmap: np.ndarray, region: np.ndarray) -> float:
    """(heatmap mass inside the region / total mass) / (region area / image area); 1.0 = an even spread."""
    area = float(region.mean())
    if area <= 0:
        return float("nan")
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0, None)
    total = float(heat.sum())
    if not (total > 0 and np.isfinite(total)):
        return 1.0  # a map that points nowhere scores as an even spread
    return float(heat[region].sum() / total / area)


@dataclass(frozen=True)
class Score:
    """The four localisation figures of one heatmap against one region."""

    pointing: float  # 1 hit, 0 miss (a share for tied peaks)
    pointing_tol: float
    energy: float


def score(heatmap: np.ndarray, region: Region, tolerance: float = TOLERANCE) -> Score:
    """Score one (h, w) heatmap, at the annotated image's resolution, against its region."""
    h, w = heatmap.shape
    exact = region.mask(h, w)
    return Score(pointing(heatmap, exact), pointing(heatmap, region.mask(h, w, tolerance)),
                 energy_ratio(heatmap, exact))


def summarise(scores: Sequence[Score], groups=None, unit: str = "images", n_boot: int = 1000,
              seed: int = 0) -> dict[str, float]:
    """Mean pointing (exact, with tolerance) and energy ratio (mean and median) over images, with 95% bootstrap
    intervals for the two pointing figures that resample ``groups`` (patients, volumes; images when None)."""
    if not scores:
        return {"n": 0, "pointing": float("nan"), "pointing_tol": float("nan"), "energy": float("nan"),
                "energy_median": float("nan")}
    energy = np.array([s.energy for s in scores], dtype=float)
    exact, tol = (np.array([getattr(s, k) for s in scores], dtype=float) for k in ("pointing", "pointing_tol"))
    return {"n": len(scores), "pointing": float(exact.mean()), "pointing_tol": float(tol.mean()),
            "energy": float(np.nanmean(energy)), "energy_median": float(np.nanmedian(energy)),
            "pointing_ci95": list(ratio_ci(exact, None, groups, n_boot, seed)),
            "pointing_tol_ci95": list(ratio_ci(tol, None, groups, n_boot, seed)),
            "interval": interval_info(len(scores), groups, unit, n_boot)}
