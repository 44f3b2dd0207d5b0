"""Matplotlib figures, nothing else: each function returns a Figure for the caller to save."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
