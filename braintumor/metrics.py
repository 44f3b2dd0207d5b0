"""Pure metrics from labels and class probabilities, and the files that record them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from . import plots
from .plots import atomic_save_figure
from .runs import atomic_write_json, atomic_write_text, markdown_table, write_csv

EPS = 1e-7  # same clipping as Keras' categorical cross-entropy


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap interval for the mean of a 0/1 vector (accuracy); (nan, nan) when empty."""
    correct = np.asarray(correct, dtype=float)
    if len(correct) == 0 or n_boot == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), size=(n_boot, len(correct)))].mean(axis=1)
    alpha = (1 - level) / 2
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


def macro_auc(y_true: np.ndarray, probs: np.ndarray) -> tuple[float, dict[int, float]]:
    """One-vs-rest AUC per class and their mean, over classes that have both positives and negatives."""
    per = {}
    for c in range(probs.shape[1]):
        pos = y_true == c
        if 0 < pos.sum() < len(y_true):
            per[c] = float(roc_auc_score(pos, probs[:, c]))
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def compute_metrics(y_true, probs, class_names, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Loss, accuracy (+95% bootstrap CI), macro AUC and F1, per-class precision/recall/F1/support, confusion."""
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    y_pred = probs.argmax(axis=1)
    correct = (y_pred == y_true).astype(float)
    labels = list(range(k))
    prec, rec, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    auc, auc_per = macro_auc(y_true, probs)
    present = support > 0
    return {
        "classes": list(class_names),
        "n": int(len(y_true)),
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "accuracy_ci95": list(bootstrap_ci(correct, n_boot, seed)),
        "loss": float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true], EPS, 1.0)).mean()),
        "auc": auc,
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": {
            c: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                "support": int(support[i]), "auc": auc_per.get(i)}
            for i, c in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def metrics_markdown(m: dict[str, Any], title: str = "Metrics") -> str:
    """metrics.md: the headline numbers, per-class precision/recall/F1 and the confusion matrix."""
    lo, hi = m["accuracy_ci95"]
    headline = [m["n"], f"{m['accuracy']:.4f}", f"{lo:.4f} - {hi:.4f}", f"{m['loss']:.4f}", f"{m['auc']:.4f}",
                f"{m['macro_f1']:.4f}"]
    per_class = [[c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", v["support"]]
                 for c, v in m["per_class"].items()]
    confusion = [[c, *row] for c, row in zip(m["classes"], m["confusion_matrix"])]
    lines = [
        f"# {title}", "",
        *markdown_table(["n", "accuracy", "95% CI", "loss", "AUC (macro OvR)", "macro F1"], [headline]), "",
        *markdown_table(["class", "precision", "recall", "F1", "support"], per_class), "",
        "Confusion matrix (rows: true, columns: predicted)", "",
        *markdown_table(["true \\ predicted", *m["classes"]], confusion),
    ]
    return "\n".join(lines) + "\n"


def write_metrics(out_dir: Path, m: dict[str, Any], title: str = "Metrics") -> None:
    """metrics.json, metrics.md and the two confusion-matrix PNGs under ``out_dir``."""
    atomic_write_json(out_dir / "metrics.json", m)
    atomic_write_text(out_dir / "metrics.md", metrics_markdown(m, title))
    cm = np.asarray(m["confusion_matrix"])
    atomic_save_figure(plots.confusion_matrix_figure(cm, m["classes"]), out_dir / "plots" / "confusion_matrix.png")
    atomic_save_figure(plots.confusion_matrix_figure(cm, m["classes"], normalize=True),
                       out_dir / "plots" / "confusion_matrix_normalized.png")


def write_predictions(path: Path, paths: list[str], y_true, probs, class_names) -> None:
    """One row per image: path, true class, predicted class, then a probability column per class."""
    write_csv(path, ["path", "true", "predicted", *[f"p_{c}" for c in class_names]],
              ([p, class_names[int(t)], class_names[int(np.argmax(row))], *[f"{v:.6f}" for v in row]]
               for p, t, row in zip(paths, y_true, probs)))
