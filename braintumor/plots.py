"""Matplotlib figures, nothing else: each function returns a Figure for the caller to save."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .runs import atomic_write_bytes  # noqa: E402


def confusion_matrix_figure(cm: np.ndarray, classes: list[str], normalize: bool = False, title: str = ""):
    """Rows are true classes, columns predicted; normalised rows show recall per class."""
    cm = np.asarray(cm, dtype=float)
    if normalize:
        sums = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)
    size = 1.2 + 0.9 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else max(cm.max(), 1))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(classes)), classes, rotation=35, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            text = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", color="white" if cm[i, j] > threshold else "black")
    ax.set_title(title or ("confusion matrix (row-normalised: recall)" if normalize else "confusion matrix"))
    fig.tight_layout()
    return fig


def history_figure(history: dict[str, list[float]], title: str = ""):
    """Loss and accuracy per epoch, train against validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        if key in history:
            ax.plot(epochs, history[key], label="train", marker="o", ms=3)
        if "val_" + key in history:
            ax.plot(epochs, history["val_" + key], label="validation", marker="o", ms=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or "training history")
    fig.tight_layout()
    return fig


def bar_figure(labels: list[str], values: list[float], errors: list[tuple[float, float]] | None = None,
               ylabel: str = "", title: str = ""):
    """Vertical bars, optionally with asymmetric error whiskers given as (low, high) absolute bounds."""
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(labels) + 2), 3.8))
    x = np.arange(len(labels))
    yerr = None
    if errors is not None:
        lo = [max(0.0, v - e[0]) for v, e in zip(values, errors)]
        hi = [max(0.0, e[1] - v) for v, e in zip(values, errors)]
        yerr = np.array([lo, hi])
    ax.bar(x, values, yerr=yerr, capsize=4, color="#4C72B0")
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def class_distribution_figure(per_class: dict[str, dict[str, int]], title: str = ""):
    """Images per class, one bar per split side by side, each bar labelled with its count and share."""
    splits = list(per_class)
    classes = list(next(iter(per_class.values()))) if per_class else []
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(classes) + 2), 4))
    width = 0.8 / max(1, len(splits))
    x = np.arange(len(classes))
    for k, split in enumerate(splits):
        counts = [per_class[split][c] for c in classes]
        total = max(1, sum(counts))
        bars = ax.bar(x + (k - (len(splits) - 1) / 2) * width, counts, width, label=split)
        ax.bar_label(bars, [f"{n}\n{n / total:.0%}" for n in counts], fontsize=8)
    ax.set_xticks(x, classes)
    ax.set_ylabel("images")
    ax.margins(y=0.18)
    ax.grid(axis="y", alpha=0.3)
    if len(splits) > 1:
        ax.legend()
    ax.set_title(title or "class distribution")
    fig.tight_layout()
    return fig


def overlaid_histograms_figure(values: dict[str, dict[str, np.ndarray]], xlabel: str, title: str = "",
                               bins: int = 40):
    """One panel per split; in each, a density histogram per class drawn over the others. A class keeps one
    colour in every panel, also where another panel has no image of it."""
    fig, axes = plt.subplots(1, max(1, len(values)), figsize=(5.5 * max(1, len(values)), 3.8), squeeze=False)
    for ax, (split, by_class) in zip(axes[0], values.items(), strict=False):
        every = np.concatenate([v for v in by_class.values() if len(v)]) if by_class else np.zeros(0)
        edges = np.histogram_bin_edges(every, bins=bins) if len(every) else bins
        for k, (cls, v) in enumerate(by_class.items()):
            if len(v):
                colour = f"C{k % 10}"
                ax.hist(v, bins=edges, density=True, histtype="stepfilled", alpha=0.35, label=cls, color=colour)
                ax.hist(v, bins=edges, density=True, histtype="step", color=colour)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.set_title(split)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _strip(images: list[np.ndarray], gap: int, every: int = 0, wide_gap: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 images side by side on white, with a wider gap after every ``every`` images."""
    h = max(im.shape[0] for im in images)
    parts = []
    for k, im in enumerate(images):
        if k:
            width = wide_gap if every and k % every == 0 else gap
            parts.append(np.full((h, width, 3), 255, np.uint8))
        parts.append(im)
    return np.concatenate(parts, axis=1)


def sample_grid_figure(rows: list[list[np.ndarray]], row_labels: list[str], title: str = ""):
    """Same-size (h, w, 3) uint8 images, one labelled row each; one axes per row keeps this fast."""
    ncols = max([len(r) for r in rows] + [1])
    fig, axes = plt.subplots(max(1, len(rows)), 1, figsize=(1.6 * ncols + 1.0, 1.7 * max(1, len(rows))),
                             squeeze=False)
    for ax, row, label in zip(axes[:, 0], rows, row_labels, strict=False):
        if row:
            ax.imshow(_strip(row, gap=4))
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def property_grid_figure(cells: dict[tuple[str, str], list[np.ndarray]], classes: list[str], values: list[str],
                         counts: dict[str, dict[str, int]], title: str = ""):
    """Rows: classes; columns: a property's values; each cell a strip of sample (h, w, 3) images captioned with
    the number of such images. An empty cell says 'none'."""
    fig, axes = plt.subplots(len(classes), len(values), squeeze=False,
                             figsize=(2.0 + 1.1 * len(values) * max([1, *map(len, cells.values())]),
                                   0.6 + 1.35 * len(classes)))
    for i, c in enumerate(classes):
        for j, v in enumerate(values):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            images = cells.get((c, v), [])
            if images:
                ax.imshow(_strip(images, gap=3))
            else:
                ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes, color="gray")
            ax.set_title(f"{v}: {counts[c].get(v, 0)}", fontsize=8)
        axes[i, 0].set_ylabel(c, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def pair_montage_figure(rows: list[tuple[str, list[tuple[np.ndarray, np.ndarray, str]]]], pairs_per_row: int,
                        title: str = ""):
    """Rows of same-size image pairs (a, b, caption) side by side, each row labelled (e.g. a distance)."""
    nrows = max(1, len(rows))
    size = (3.2 * max(1, pairs_per_row) + 1.4, 2.1 * nrows)
    fig, axes = plt.subplots(nrows, 1, figsize=size, squeeze=False)
    for ax, (label, pairs) in zip(axes[:, 0], rows, strict=False):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(label if pairs else f"{label}\n(no pair)", rotation=0, ha="right", va="center",
                      fontsize=9)
        if not pairs:
            continue
        images = [im for a, b, _ in pairs for im in (a, b)]
        w, gap, wide = images[0].shape[1], 3, 24
        ax.imshow(_strip(images, gap, every=2, wide_gap=wide))
        for k, (_, _, caption) in enumerate(pairs):
            x = k * (2 * w + gap + wide)
            ax.text(x, images[0].shape[0] + 4, caption, fontsize=5.5, va="top", ha="left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def distance_histogram_figure(distances: dict[str, np.ndarray], threshold: int, max_distance: int = 32):
    """Distance from each image to its nearest other image (bits), bars per set, threshold marked."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    x = np.arange(max_distance + 1)
    width = 0.8 / max(1, len(distances))
    for k, (name, d) in enumerate(distances.items()):
        d = np.asarray(d)
        counts = np.bincount(d[d <= max_distance].astype(int), minlength=max_distance + 1)
        ax.bar(x + (k - (len(distances) - 1) / 2) * width, counts, width, label=name)
    ax.axvline(threshold + 0.5, color="red", ls="--", label=f"threshold ({threshold})")
    ax.set_xlabel("pHash distance to the nearest other image (bits)")
    ax.set_ylabel("images")
    ax.set_xlim(-0.8, max_distance + 0.8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    ax.set_title("nearest-neighbour distance")
    fig.tight_layout()
    return fig


def cam_panel_figure(image: np.ndarray, heatmap: np.ndarray, blended: np.ndarray, title: str = ""):
    """Input, heatmap and overlay side by side (Grad-CAM); images are (h, w, 3) uint8, the heatmap [0, 1]."""
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.6))
    axes[0].imshow(image)
    axes[0].set_title("input")
    im = axes[1].imshow(heatmap, cmap="jet", vmin=0, vmax=1)
    axes[1].set_title("heatmap")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    axes[2].imshow(blended)
    axes[2].set_title("overlay")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def image_grid_figure(rows: list[list[tuple]], row_labels: list[str], title: str = ""):
    """A grid of images; each cell is (image, caption, ok): ok True/False frames it green/red, None plain."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.3 * n_cols + 0.6, 2.7 * n_rows + 0.5), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            image, caption, ok = row[j]
            ax.imshow(image)
            color = "black" if ok is None else ("#1a9850" if ok else "#d73027")
            ax.set_title(caption, fontsize=8, color=color)
            if ok is not None:
                for spine in ax.spines.values():
                    spine.set_edgecolor(color)
                    spine.set_linewidth(3)
        axes[i, 0].set_ylabel(row_labels[i], fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def reliability_figure(curves: dict[str, list[dict]], title: str = ""):
    """Reliability diagram: accuracy against mean confidence per confidence bin, one line per curve (e.g. before
    and after calibration), with the bins' image counts below."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.2), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfectly calibrated")
    for (label, bins), marker in zip(curves.items(), "os^v"):
        used = [b for b in bins if b["n"]]
        top.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], marker=marker, label=label)
    first = next(iter(curves.values()))
    bottom.bar([(b["low"] + b["high"]) / 2 for b in first], [b["n"] for b in first],
               width=first[0]["high"] - first[0]["low"], color="0.7", edgecolor="0.4")
    bottom.set_yscale("symlog")
    top.set(ylabel="accuracy in the bin", xlim=(0, 1), ylim=(0, 1.02), title=title)
    bottom.set(xlabel="confidence (top-class probability)", ylabel="images")
    top.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def score_histogram_figure(scores: dict[str, np.ndarray], threshold: float, xlabel: str, title: str = ""):
    """Overlaid histograms of a score for several sets of images, with the decision threshold marked."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    values = np.concatenate([np.asarray(v, float) for v in scores.values()]) if scores else np.zeros(1)
    hi = float(np.nanpercentile(values, 99.5)) if values.size else 1.0
    bins = np.linspace(0, max(hi, threshold * 1.5), 50)
    for label, v in scores.items():
        ax.hist(np.clip(np.asarray(v, float), 0, bins[-1]), bins=bins, alpha=0.55, label=f"{label} (n={len(v)})")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set(xlabel=xlabel, ylabel="images", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def stress_figure(curves: dict[str, dict[str, list]], title: str = ""):
    """One panel per metric, one line per shift: the metric against the shift's severity (0 = unchanged).
    ``curves`` is {metric: {shift: values by severity}}; None values (a metric that does not apply) are skipped."""
    metrics = [m for m, by in curves.items() if any(v is not None for vs in by.values() for v in vs)]
    cols = min(3, max(len(metrics), 1))
    rows = -(-len(metrics) // cols) if metrics else 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows + 0.8), squeeze=False)
    styles = [(c, m) for m in ("o", "s", "^", "v") for c in plt.get_cmap("tab10").colors]
    for ax, metric in zip(axes.flat, metrics):
        for (shift, values), (colour, marker) in zip(curves[metric].items(), styles):
            x = [i for i, v in enumerate(values) if v is not None]
            ax.plot(x, [values[i] for i in x], marker=marker, color=colour, markersize=4, linewidth=1.2, label=shift)
        ax.set(title=metric.replace("_", " "), xlabel="severity (0 = unchanged)", ylim=(-0.02, 1.02))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6) or 1, fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1 if rows == 1 else 0.07, 1, 1))
    return fig


def figure_png(fig, dpi: int = 110) -> bytes:
    """PNG bytes of a figure (tight bounding box); closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def atomic_save_figure(fig, path: str | Path, dpi: int = 120) -> None:
    """Save a matplotlib figure atomically as PNG and close it."""
    atomic_write_bytes(path, figure_png(fig, dpi))
