"""Metrics from predictions, their files, and evaluating a saved run on any folder of class sub-folders."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import plots
from .config import Config
from .errors import DataError, RunError
from .runs import atomic_save_figure, atomic_write_json, atomic_write_text

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
    from sklearn.metrics import roc_auc_score

    per = {}
    for c in range(probs.shape[1]):
        pos = y_true == c
        if 0 < pos.sum() < len(y_true):
            per[c] = float(roc_auc_score(pos, probs[:, c]))
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def compute_metrics(y_true, probs, class_names, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Loss, accuracy (+95% bootstrap CI), macro AUC and F1, per-class precision/recall/F1/support, confusion."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

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
    lo, hi = m["accuracy_ci95"]
    lines = [
        f"# {title}", "",
        "| n | accuracy | 95% CI | loss | AUC (macro OvR) | macro F1 |",
        "|---|---|---|---|---|---|",
        f"| {m['n']} | {m['accuracy']:.4f} | {lo:.4f} - {hi:.4f} | {m['loss']:.4f} | {m['auc']:.4f} "
        f"| {m['macro_f1']:.4f} |",
        "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|",
    ]
    for c, v in m["per_class"].items():
        lines.append(f"| {c} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |")
    lines += ["", "Confusion matrix (rows: true, columns: predicted)", "",
              "| true \\ predicted | " + " | ".join(m["classes"]) + " |",
              "|---" * (len(m["classes"]) + 1) + "|"]
    for c, row in zip(m["classes"], m["confusion_matrix"]):
        lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
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
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "true", "predicted", *[f"p_{c}" for c in class_names]])
    for p, t, row in zip(paths, y_true, probs):
        w.writerow([p, class_names[int(t)], class_names[int(np.argmax(row))], *[f"{v:.6f}" for v in row]])
    atomic_write_text(path, buf.getvalue())


def predict(model, images: np.ndarray, batch_size: int = 64, tta: bool = False) -> np.ndarray:
    """Class probabilities for (n, h, w, c) uint8 images; ``tta`` averages with horizontal flips."""
    out = []
    for start in range(0, len(images), batch_size):  # one float32 batch at a time, not 4x the whole set
        x = images[start:start + batch_size].astype(np.float32)
        p = np.asarray(model.predict_on_batch(x))
        if tta:
            p = (p + np.asarray(model.predict_on_batch(x[:, :, ::-1]))) / 2
        out.append(p)
    if not out:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float64)
    return np.concatenate(out).astype(np.float64)


@dataclass
class LoadedRun:
    """Everything a saved train run holds that inference needs."""

    path: Path
    config: Config
    meta: dict[str, Any]
    model: Any

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def channels(self) -> int:
        return int(self.meta["channels"])


def load_run(run_dir: str | Path, with_model: bool = True) -> LoadedRun:
    """Config, metadata and (safely loaded) model of a train run directory."""
    import keras

    from . import models  # noqa: F401  (registers the custom layers)
    from .config import build, read_yaml
    from .errors import RunError
    from .runs import read_meta

    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    if meta.get("command") == "kfold":
        return load_kfold_ensemble(run_dir, with_model)
    if "class_names" not in meta:
        raise RunError(f"{run_dir} is not a train run (meta.json has no class_names)")
    cfg = build(Config, read_yaml(run_dir / "config.yaml"))
    model = None
    if with_model:
        path = run_dir / "model.keras"
        if not path.is_file():
            raise RunError(f"{run_dir} has no model.keras (status: {meta.get('status', 'unknown')})")
        model = keras.models.load_model(path, safe_mode=True)
    return LoadedRun(run_dir, cfg, meta, model)


def load_kfold_ensemble(run_dir: Path, with_model: bool = True) -> LoadedRun:
    """A kfold run as one model: the mean of its complete fold models' probabilities (a Keras model of its own,
    so evaluate, serve and the benchmarks use it like a train run's model)."""
    import keras

    from .errors import RunError
    from .kfold import fold_complete
    from .runs import read_meta

    folds = sorted((p for p in run_dir.glob("fold_*") if fold_complete(p)), key=lambda p: int(p.name[5:]))
    if not folds:
        raise RunError(f"{run_dir} has no complete fold yet; finish it with: braintumor kfold --resume {run_dir}")
    first = load_run(folds[0], with_model=False)
    meta = {**first.meta, **read_meta(run_dir), "ensemble_of": [p.name for p in folds],
            "class_names": first.class_names, "image_size": first.image_size, "channels": first.channels}
    model = None
    if with_model:
        members = [keras.models.load_model(p / "model.keras", safe_mode=True) for p in folds]
        for p, m in zip(folds, members):
            m.name = f"{p.name}_{m.name}"  # layer names must be unique inside the ensemble
        inputs = keras.Input(shape=members[0].input_shape[1:], name="image")
        outs = [m(inputs) for m in members]
        out = keras.layers.Average(name="ensemble_mean")(outs) if len(outs) > 1 else outs[0]
        model = keras.Model(inputs, out, name="kfold_ensemble")
    return LoadedRun(run_dir, first.config, meta, model)


def evaluate_folder(run: LoadedRun, data_dir: str | Path, tta: bool = False):
    """Decode a folder with the run's class mapping and image settings; return (loaded images, probs)."""
    from .data import list_images, load_images

    listing = list_images(data_dir, run.config.data.classes, require_all=False)
    if tuple(listing.class_names) != tuple(run.class_names):
        raise DataError(f"{data_dir} classes {listing.class_names} differ from the model's {run.class_names}")
    loaded = load_images(listing, run.image_size, run.channels)
    return loaded, predict(run.model, loaded.images, run.config.train.batch_size, tta)


def evaluate_paths(run: LoadedRun, paths: list[str], labels: np.ndarray, tta: bool = False):
    """Like evaluate_folder, for an explicit list of files (a run's own validation split)."""
    from .data import ImageList, load_images

    listing = ImageList(Path("."), tuple(paths), np.asarray(labels), tuple(run.class_names), {})
    loaded = load_images(listing, run.image_size, run.channels)
    return loaded, predict(run.model, loaded.images, run.config.train.batch_size, tta)


def read_split(run_dir: Path, which: str = "val") -> tuple[list[str], np.ndarray]:
    """Paths and labels of one side of a train run's split.csv."""
    import pandas as pd

    from .errors import RunError

    path = Path(run_dir) / "split.csv"
    if not path.is_file():
        raise RunError(f"{run_dir} has no split.csv; pass --data DIR to evaluate on a folder")
    df = pd.read_csv(path)
    df = df[df["split"] == which]
    return df["path"].tolist(), df["label"].to_numpy(dtype=np.int64)


def run_evaluate(run_dir: str | Path, data: str | Path | None = None, *, runs_dir: str | Path = "runs",
                 name: str | None = None, tta: bool | None = None,
                 exclude_duplicates_of: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Evaluate a train run's best model on a folder (or its own validation split) into runs/evaluate/<run>/.

    ``exclude_duplicates_of`` (a training folder): score only images that are not exact or near copies of
    its images; metrics["excluded_duplicates"] says how many were left out, excluded.csv lists them.
    """
    from .runs import new_run_dir, run_status, start_run, write_meta

    run = load_run(run_dir)
    tta = run.config.eval.tta if tta is None else tta
    out = new_run_dir(runs_dir, "evaluate", run.config.model.arch, name)
    start_run(out, run.config, "evaluate", source_run=str(run.path),
              data=str(data) if data else "validation split of the source run", tta=tta)
    with run_status(out):
        if data is None:
            if "ensemble_of" in run.meta:
                raise RunError(f"{run.path} is a k-fold ensemble: every image of its folder trained one of its "
                               "models, so pass --data TEST_DIR (a folder it never saw)")
            loaded, probs = evaluate_paths(run, *read_split(run.path, "val"), tta=tta)
        else:
            loaded, probs = evaluate_folder(run, data, tta=tta)
        excluded = None
        if exclude_duplicates_of is not None:
            loaded, probs, excluded = exclude_copies(loaded, probs, exclude_duplicates_of, run, out)
        m = compute_metrics(loaded.labels, probs, run.class_names, run.config.eval.bootstrap, run.config.seed)
        if excluded is not None:
            m["excluded_duplicates"] = excluded
            write_meta(out, exclude_duplicates_of=str(exclude_duplicates_of), excluded=excluded["total"])
        without = f", without {excluded['total']} copies of {exclude_duplicates_of}" if excluded else ""
        write_metrics(out, m, f"Evaluation of {run.path.name} on {data or 'its validation split'}{without}")
        write_predictions(out / "predictions.csv", loaded.paths, loaded.labels, probs, run.class_names)
        write_skipped(out, loaded.skipped)
        write_meta(out, n=m["n"], skipped=len(loaded.skipped))
    return out, m


def exclude_copies(loaded, probs: np.ndarray, train_dir: str | Path, run: LoadedRun, out_dir: Path):
    """Drop the images that are exact or near copies of a training image; write excluded.csv.

    Returns (kept images, their probabilities, {"of", "near_threshold", "exact", "near", "total", "kept"}).
    """
    from .eda import DEFAULT_NEAR_THRESHOLD, copies_of

    mask, rows = copies_of(train_dir, loaded.paths, run.config.data.classes, DEFAULT_NEAR_THRESHOLD)
    keep = np.flatnonzero(~mask)
    if len(keep) == 0:
        raise DataError(f"all {len(mask)} images are copies of images under {train_dir}: none left to score")
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["path", "copy_of", "distance", "kind"])
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out_dir / "excluded.csv", buf.getvalue())
    kept = loaded.subset(keep)
    kept.skipped = loaded.skipped
    exact = sum(r["kind"] == "exact" for r in rows)
    info = {"of": str(train_dir), "near_threshold": DEFAULT_NEAR_THRESHOLD, "exact": exact,
            "near": len(rows) - exact, "total": len(rows), "kept": int(len(keep))}
    return kept, probs[keep], info


def write_skipped(out_dir: Path, skipped: list[tuple[str, str]]) -> None:
    """skipped.txt: one unreadable file per line with the reason; written only when something was skipped."""
    if skipped:
        atomic_write_text(out_dir / "skipped.txt", "".join(f"{p}\t{why}\n" for p, why in skipped))
