"""Properties of an image that should not predict its class (collection, MRI contrast, plane, skull, frame, the
head's share of the image, colour, size, brightness), estimated per image, and how strongly each one does predict
the class.

A model that scores 98% may have learned that one collection's no-tumour images are T2-weighted and its tumours
post-contrast T1. These estimators are cheap physics-flavoured rules on a 128-pixel gray copy of the decoded image
(NumPy and scipy.ndimage; no model), so `eda` can measure every image of a dataset in a couple of minutes:

- **head mask**: the largest bright connected region (half the Otsu level), closed and hole-filled; depth is the
  distance to its edge over the largest distance (0 at the scalp, 1 in the middle).
- **contrast** (T2-like / T1/FLAIR-like), from the ordering of CSF and brain tissue, not from a trained
  classifier: CSF is the brain's brightest fluid on T2 and dark on T1 and FLAIR, so an interior (depth > 0.2) with
  at least 3% of pixels far above its median (x1.6) and 8 times as many of those as far below it (x0.5) is
  T2-like. T1 and FLAIR both keep CSF dark; the fat-bright scalp of T1 (``fat_share``, recorded per image) told
  them apart too seldom on the labelled LGG slices, so they are reported together. Agreement (and that figure):
  benchmarks/confounds.md.
- **plane** (axial / coronal / sagittal): sagittal slices are not left-right symmetric; coronal slices run on
  into the neck, so the head's lowest rows stay wide (>= 0.55 of its widest row), where an axial slice's oval
  closes. Agreement: benchmarks/confounds.md.
- **skull** (present / stripped): the scalp of an unstripped head is brighter than the brain just inside it and
  the skull bone between is dark; a stripped brain's edge is cortex, about as bright as its middle.
- **border**: the frame's outermost ring is not black (a scanner frame, a white border, a filled background).

The association of each property with the class is Cramer's V with Bergsma's (2013) bias correction, from the
class x value contingency table (scipy's chi-square; scipy.stats.contingency.association has no correction, and
with thousands of images a few rare values inflate the plain V).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from scipy.stats import chi2_contingency

WORK = 128  # pixels: every estimator works on a square gray copy of this side
CONTRASTS = ("T2-like", "T1/FLAIR-like")
PLANES = ("axial", "coronal", "sagittal")
WARN_V = 0.3  # bias-corrected Cramer's V from which a property is said to predict the class
STRONG_V = 0.5  # ... and from which it is called strong
# rule thresholds (set on half of the LGG development patients and 48 Kaggle images looked at; the other half
# of the patients measures them: benchmarks/confounds.md)
CSF_BRIGHT, CSF_DARK = 1.6, 0.5  # interior pixels above / below these multiples of the interior median
T2_MIN, T2_RATIO = 0.03, 8.0  # T2-like: at least this share bright, and this many times the dark share
FAT_BRIGHT = 1.25  # scalp pixels above this multiple of the brain median count as fat-bright (fat_share)
SYMMETRY_MIN = 0.80  # left-right correlation below which a slice is sagittal
BASE_WIDTH = 0.55  # coronal when the head's lowest rows are at least this share of its widest row (the neck)
SKULL_RATIO = 1.25  # scalp (90th percentile) over brain median below which the skull is called stripped
SPOKEN = {"head": "head's share of the image"}  # a property's name in a warning's sentence, where it differs
HEAD_CUTS = (0.30, 0.50)  # head's share of the image: small below the first, large from the second
BORDER_LEVEL = 24  # 0-255: a frame whose outermost ring is brighter than this (median) is not black


def gray_work(img: Image.Image | np.ndarray, side: int = WORK) -> np.ndarray:
    """(side, side) float32 gray copy, 0-255."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(np.asarray(img, np.uint8).squeeze())
    return np.asarray(img.convert("L").resize((side, side), Image.BILINEAR), dtype=np.float32)


def otsu_level(gray: np.ndarray) -> float:
    """Otsu's threshold of a 0-255 image (the level that best splits its histogram in two)."""
    hist = np.histogram(gray, 256, (0, 256))[0].astype(np.float64)
    p = hist / max(1.0, hist.sum())
    w = np.cumsum(p)
    m = np.cumsum(p * np.arange(256))
    between = (m[-1] * w - m) ** 2 / np.maximum(w * (1 - w), 1e-12)
    return float(np.argmax(between))


def head_mask(gray: np.ndarray) -> np.ndarray:
    """(h, w) bool: the head (or brain, when stripped): the largest bright region, closed and hole-filled.

    The outermost 2% of the frame is never head: a white border would otherwise enclose the whole image."""
    smooth = ndi.gaussian_filter(gray, 1.0)
    edge = max(1, int(round(0.02 * min(gray.shape))))
    smooth[:edge], smooth[-edge:], smooth[:, :edge], smooth[:, -edge:] = 0, 0, 0, 0
    fg = smooth > max(0.5 * otsu_level(smooth), 0.05 * float(np.percentile(smooth, 99.5)), 2.0)
    lab, n = ndi.label(fg)
    if n == 0:
        return fg
    biggest = lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
    return ndi.binary_fill_holes(ndi.binary_closing(biggest, iterations=3))


def depth(mask: np.ndarray) -> np.ndarray:
    """Distance to the mask's edge over the largest such distance: 0 outside and at the edge, 1 at the middle."""
    d = ndi.distance_transform_edt(mask)
    return d / max(float(d.max()), 1.0)


def features(gray: np.ndarray) -> dict[str, float]:
    """The numbers the rules read; NaN where the head is too small to say (under 2% of the frame)."""
    mask = head_mask(gray)
    dn = depth(mask)
    interior, scalp = gray[dn > 0.2], gray[mask & (dn <= 0.2)]
    edge = mask & ((dn <= 0.08) | ~ndi.binary_erosion(mask))  # the outermost layer at least
    nan = float("nan")
    out = {"head_share": float(mask.mean()), "csf_bright": nan, "csf_dark": nan, "fat_share": nan,
           "scalp_ratio": nan, "symmetry": nan, "base_width": nan, "border_level": _border_level(gray)}
    if mask.mean() < 0.02 or interior.size < 30 or scalp.size < 10:
        return out
    med = max(float(np.median(interior)), 1.0)
    out.update(csf_bright=float(np.mean(interior > CSF_BRIGHT * med)),
               csf_dark=float(np.mean(interior < CSF_DARK * med)),
               fat_share=float(np.mean(scalp > FAT_BRIGHT * med)),
               scalp_ratio=float(np.percentile(gray[edge], 90)) / med,
               symmetry=_lr_symmetry(gray, mask), base_width=_base_width(mask))
    return out


def _lr_symmetry(gray: np.ndarray, mask: np.ndarray) -> float:
    """Correlation of the masked head with its mirror image about the head's own vertical midline."""
    cols = np.flatnonzero(mask.any(axis=0))
    shift = int(round(mask.shape[1] / 2 - (cols[0] + cols[-1] + 1) / 2))
    head = np.roll(ndi.gaussian_filter(gray, 1.5) * mask, shift, axis=1)
    a, b = head.ravel(), head[:, ::-1].ravel()
    if a.std() == 0:
        return 1.0
    return float(np.corrcoef(a, b)[0, 1])


def _base_width(mask: np.ndarray) -> float:
    """Width of the head two rows above its lowest row, over its widest row's width."""
    widths = mask.sum(axis=1)
    rows = np.flatnonzero(widths)
    return float(widths[max(rows[0], rows[-1] - 2)] / widths.max())


def _border_level(gray: np.ndarray) -> float:
    """Median of the outermost 2-pixel ring of the frame (0-255)."""
    ring = np.concatenate([gray[:2].ravel(), gray[-2:].ravel(), gray[:, :2].ravel(), gray[:, -2:].ravel()])
    return float(np.median(ring))


def contrast_of(f: dict[str, float]) -> str:
    """T2-like (bright CSF) or T1/FLAIR-like (dark CSF) (module docstring); 'unknown' without a head."""
    if np.isnan(f["csf_bright"]):
        return "unknown"
    bright = f["csf_bright"] >= T2_MIN and f["csf_bright"] >= T2_RATIO * f["csf_dark"]
    return "T2-like" if bright else "T1/FLAIR-like"


def plane_of(f: dict[str, float]) -> str:
    """axial / coronal / sagittal from left-right symmetry and the width of the head's base (module docstring)."""
    if np.isnan(f["symmetry"]):
        return "unknown"
    if f["symmetry"] < SYMMETRY_MIN:
        return "sagittal"
    return "coronal" if f["base_width"] >= BASE_WIDTH else "axial"


def skull_of(f: dict[str, float]) -> str:
    """'skull' when the scalp is brighter than the brain, 'stripped' when the edge is no brighter than cortex."""
    if np.isnan(f["scalp_ratio"]):
        return "unknown"
    return "skull" if f["scalp_ratio"] >= SKULL_RATIO else "stripped"


def measure(img: Image.Image | np.ndarray) -> dict[str, Any]:
    """Per image: the estimated contrast, plane, skull and border (categories) and the features behind them."""
    f = features(gray_work(img))
    return {"contrast": contrast_of(f), "plane": plane_of(f), "skull": skull_of(f),
            "border": "frame" if f["border_level"] > BORDER_LEVEL else "black",
            **{k: round(v, 4) for k, v in f.items()}}


# ----------------------------------------------------------------------------------------------------
# From per-image measurements to categories


def size_values(sizes: Sequence[tuple[int, int]], keep: int = 5) -> list[str]:
    """'WxH' per image (original pixels); sizes outside the ``keep`` most common read 'other'."""
    names = [f"{w}x{h}" for w, h in sizes]
    common = {n for n, _ in Counter(names).most_common(keep)}
    return [n if n in common else "other" for n in names]


def brightness_values(means: np.ndarray) -> tuple[list[str], list[float]]:
    """Mean pixel value in tertiles of the whole dataset: 'dark' / 'mid' / 'bright', and the two cut points."""
    means = np.asarray(means, dtype=np.float64)
    if not len(means):
        return [], []
    cuts = [float(c) for c in np.percentile(means, [100 / 3, 200 / 3])]
    names = np.where(means < cuts[0], f"dark (<{cuts[0]:.0f})",
                     np.where(means < cuts[1], f"mid ({cuts[0]:.0f}-{cuts[1]:.0f})", f"bright (>={cuts[1]:.0f})"))
    return names.tolist(), cuts


def head_values(shares: Sequence[float] | np.ndarray) -> tuple[list[str], list[float]]:
    """The share of the image the head fills (features' ``head_share``): 'small' / 'mid' / 'large' at HEAD_CUTS.

    A slice near the top or the bottom of a head, or a head framed with a wide margin, fills little of the image;
    where one class's images are framed tighter than another's, the head's size in the frame tells the class. Fixed
    cuts, not tertiles: a dataset whose heads all fill about the same share has nothing to report."""
    shares = np.asarray(shares, dtype=np.float64)
    lo, hi = HEAD_CUTS
    names = np.where(np.isnan(shares), "unknown", np.where(
        shares < lo, f"small (<{lo:.2f})", np.where(shares < hi, f"mid ({lo:.2f}-{hi:.2f})", f"large (>={hi:.2f})")))
    return names.tolist(), list(HEAD_CUTS)


# ----------------------------------------------------------------------------------------------------
# Association with the class


def contingency(labels: Sequence[int], values: Sequence[str], n_classes: int) -> tuple[np.ndarray, list[str]]:
    """(n_classes, n_values) counts and the value names (most common first)."""
    names = [v for v, _ in Counter(values).most_common()]
    col = {v: j for j, v in enumerate(names)}
    table = np.zeros((n_classes, len(names)), dtype=np.int64)
    for y, v in zip(labels, values, strict=True):
        table[int(y), col[v]] += 1
    return table, names


def cramers_v(table: np.ndarray) -> float | None:
    """Bias-corrected Cramer's V (Bergsma 2013) of a contingency table; None when a side has one category.

    Empty rows and columns are dropped first (a class absent from the data says nothing)."""
    t = np.asarray(table, dtype=np.float64)
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    r, k = t.shape
    n = t.sum()
    if r < 2 or k < 2 or n < 2:
        return None
    chi2 = chi2_contingency(t, correction=False)[0]
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    rc, kc = r - (r - 1) ** 2 / (n - 1), k - (k - 1) ** 2 / (n - 1)
    denom = min(kc - 1, rc - 1)
    return float(np.sqrt(phi2 / denom)) if denom > 0 else None


def strongest_cell(table: np.ndarray, class_names: Sequence[str], value_names: Sequence[str]) -> dict[str, Any]:
    """The (class, value) whose share in the class most exceeds its share in the other classes (the value a class
    is over-represented in reads better than the one it lacks, and for two values the gaps are equal)."""
    t = np.asarray(table, dtype=np.float64)
    best: dict[str, Any] = {}
    for i, c in enumerate(class_names):
        if t[i].sum() == 0 or t.sum() == t[i].sum():
            continue
        inside = t[i] / t[i].sum()
        rest = np.delete(t, i, axis=0).sum(axis=0)
        outside = rest / rest.sum()
        j = int(np.argmax(inside - outside))
        gap = float(inside[j] - outside[j])
        if not best or gap > best["gap"]:
            best = {"class": c, "value": value_names[j], "share_in_class": float(inside[j]),
                    "share_elsewhere": float(outside[j]), "gap": gap,
                    "class_of_value": float(t[i, j] / t[:, j].sum())}  # of the images with the value, this class
    return best


def associate(class_names: Sequence[str], labels: Sequence[int], properties: dict[str, Sequence[str]],
              threshold: float = WARN_V) -> dict[str, Any]:
    """Per property: contingency table (counts per class and value), Cramer's V, the strongest cell and a
    plain-words warning when V >= ``threshold``."""
    out: dict[str, Any] = {"threshold": threshold, "measure": "Cramer's V, bias-corrected (Bergsma 2013)",
                           "properties": {}, "warnings": []}
    for prop, values in properties.items():
        table, names = contingency(labels, values, len(class_names))
        v = cramers_v(table)
        cell = strongest_cell(table, class_names, names)
        row: dict[str, Any] = {"v": None if v is None else round(v, 3), "values": names,
                               "counts": {c: dict(zip(names, map(int, table[i]), strict=True))
                                          for i, c in enumerate(class_names)},
                               "strongest": cell, "warning": None}
        if v is not None and v >= threshold and cell:
            row["warning"] = warning_text(prop, v, cell)
            out["warnings"].append(row["warning"])
        out["properties"][prop] = row
    return out


def warning_text(prop: str, v: float, cell: dict[str, Any]) -> str:
    """E.g. 'contrast (V 0.62, strong): notumor images are 70% T2-like, the other classes 8%: a model can learn
    the contrast instead of the tumour.'"""
    strength = "strong" if v >= STRONG_V else "moderate"
    return (f"{prop} (V {v:.2f}, {strength}): {cell['class']} images are {cell_text(prop, cell)}: a model can "
            f"learn the {SPOKEN.get(prop, prop)} instead of the tumour.")


def cell_text(prop: str, cell: dict[str, Any]) -> str:
    """'70% T2-like, the other classes 8%' ('70% from kaggle, ...' for the source)."""
    value = f"from {cell['value']}" if prop == "source" else cell["value"]
    return f"{cell['share_in_class']:.0%} {value}, the other classes {cell['share_elsewhere']:.0%}"


def value_text(prop: str, cell: dict[str, Any]) -> str:
    """'77% of T2-like images are notumor': how much the value alone gives the class away."""
    value = f"images from {cell['value']}" if prop == "source" else f"{cell['value']} images"
    return f"{cell['class_of_value']:.0%} of {value} are {cell['class']}"
