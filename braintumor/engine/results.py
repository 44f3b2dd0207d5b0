"""Reading finished runs back for comparison: one row of headline numbers per train, evaluate or kfold run,
and cohorts, so that numbers from different test data are never shown as if they were comparable.

A run's kind is the command its meta.json records (``engine.run.Run``); a kfold run's fold means come from its
summary.json, else the summary.csv of a run written before summary.json existed (the legacy parser), else the
fold directories' own metrics.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..config import read_yaml
from ..errors import ConfigError, RunError, did_you_mean
from ..runs import read_json
from .run import Run

SORT_KEYS = {
    "accuracy": True, "auc": True, "macro_f1": True, "train_images_per_second": True,
    "loss": False, "inference_ms": False, "train_seconds": False, "params": False, "epochs_run": False,
    "image_size": False, "arch": False, "run": False,
}
METRIC_KEYS = ("loss", "accuracy", "auc", "macro_f1")
# meta.json key a run may carry with its own single-image latency (ms); used instead of measuring when present
RECORDED_INFERENCE_KEY = "inference_ms"


@dataclass
class Row:
    """One run's headline numbers. ``eval_key`` identifies the exact images its metrics were computed on."""

    run: str
    kind: str  # train | evaluate | kfold
    path: str
    arch: str | None = None
    params: int | None = None
    image_size: int | None = None
    epochs_run: float | None = None
    n_eval: int | None = None
    accuracy: float = math.nan
    accuracy_ci_low: float = math.nan
    accuracy_ci_high: float = math.nan
    ci_method: str = "bootstrap"
    auc: float = math.nan
    loss: float = math.nan
    macro_f1: float = math.nan
    train_seconds: float | None = None
    train_images_per_second: float | None = None
    inference_ms: float | None = None
    inference_source: str = "not measured"
    classes: tuple[str, ...] = ()
    eval_set: str = ""
    eval_key: str = ""
    cohort: str = "A"
    model_path: str | None = field(default=None, repr=False)
    input_shape: tuple[int, ...] | None = field(default=None, repr=False)



# --------------------------------------------------------------------------------------------- reading runs


def _f(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _kind(run: Run) -> str:
    """The command that made the run, as its meta.json records it."""
    command = run.info.command
    if command in ("train", "evaluate", "kfold"):
        return command
    if command:
        raise RunError(f"{run.path} is a {command} run; compare reads train, evaluate and kfold runs")
    raise RunError(f"{run.path} is not a train, evaluate or kfold run (meta.json names no command)")


def _paths_key(csv_paths: list[Path]) -> str | None:
    """Identity of the evaluated images: a hash of the sorted, distinct 'path' column of prediction files."""
    found = [p for p in csv_paths if p.is_file()]
    if not found:
        return None
    paths: set[str] = set()
    for p in found:
        try:
            paths.update(pd.read_csv(p, usecols=["path"])["path"].astype(str))
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
            return None
    digest = hashlib.blake2b("\n".join(sorted(paths)).encode(), digest_size=6).hexdigest()
    return f"{len(paths)} images #{digest}"


def _config(path: Path) -> dict[str, Any]:
    try:
        return read_yaml(path / "config.yaml") if (path / "config.yaml").is_file() else {}
    except Exception:  # a damaged config only costs descriptive fields
        return {}


def _val_description(cfg: dict[str, Any]) -> str:
    data = cfg.get("data") or {}
    return (f"validation split of {data.get('path')} (val_split {data.get('val_split')}, "
            f"seed {cfg.get('seed')})")


def _fill_metrics(row: Row, m: dict[str, Any]) -> None:
    row.n_eval = m.get("n")
    for k in METRIC_KEYS:
        setattr(row, k, _f(m.get(k)))
    ci = m.get("accuracy_ci95") or [math.nan, math.nan]
    row.accuracy_ci_low, row.accuracy_ci_high = _f(ci[0]), _f(ci[1])
    # the unit the bootstrap resampled (runs written before groups were resampled: images)
    row.ci_method = f"bootstrap {(m.get('interval') or {}).get('text', 'resampling images')}"
    row.classes = tuple(m.get("classes") or ())


def _fill_train_meta(row: Row, meta: dict[str, Any]) -> None:
    row.arch = meta.get("arch", row.arch)
    row.params = meta.get("params")
    row.image_size = meta.get("image_size")
    row.epochs_run = meta.get("epochs_run")
    row.train_seconds = meta.get("train_seconds")
    row.train_images_per_second = meta.get("train_images_per_second")
    if not row.classes and meta.get("class_names"):
        row.classes = tuple(meta["class_names"])
    if meta.get("image_size") and meta.get("channels"):
        row.input_shape = (int(meta["image_size"]), int(meta["image_size"]), int(meta["channels"]))
    if meta.get(RECORDED_INFERENCE_KEY) is not None:
        row.inference_ms, row.inference_source = float(meta[RECORDED_INFERENCE_KEY]), "recorded"


def _read_train(path: Path, meta: dict[str, Any]) -> Row:
    row = Row(run=path.name, kind="train", path=str(path))
    _fill_metrics(row, Run(path).read_json("metrics.json"))
    _fill_train_meta(row, meta)
    row.eval_set = _val_description(_config(path))
    row.eval_key = _paths_key([path / "predictions.csv"]) or row.eval_set
    row.model_path = str(path / "model.keras") if (path / "model.keras").is_file() else None
    return row


def _read_evaluate(path: Path, meta: dict[str, Any]) -> Row:
    row = Row(run=path.name, kind="evaluate", path=str(path))
    _fill_metrics(row, Run(path).read_json("metrics.json"))
    source = Path(meta.get("source_run", ""))
    if meta.get("source_run") and (source / "meta.json").is_file():
        _fill_train_meta(row, Run(source).meta)
        row.model_path = str(source / "model.keras") if (source / "model.keras").is_file() else None
    else:
        cfg = _config(path)
        row.arch = (cfg.get("model") or {}).get("arch")
        row.image_size = (cfg.get("data") or {}).get("image_size")
    data = meta.get("data") or "unknown data"
    own_split = "validation split" in data
    row.eval_set = f"{data} (source run {source.name or 'unknown'})" if own_split else str(data)
    row.eval_key = _paths_key([path / "predictions.csv"]) or row.eval_set
    return row


def _fold_dirs(path: Path) -> list[Path]:
    def number(p: Path) -> int:
        m = re.search(r"(\d+)$", p.name)
        return int(m.group(1)) if m else 0

    return sorted((p for p in path.glob("fold_*") if p.is_dir()), key=number)


def read_summary_json(path: Path) -> dict[str, Any] | None:
    """Fold count, mean and std of each metric from the summary.json kfold writes; None without a ``val`` mean."""
    s = read_json(path)
    val = s.get("val") or {}
    if "mean" not in val:
        return None
    std = val.get("std") or {}
    return {"k": int(s.get("n_folds") or 0), "mean": {m: _f(val["mean"].get(m)) for m in METRIC_KEYS},
            "std": {m: _f(std.get(m)) for m in METRIC_KEYS}}


def kfold_summary(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(fold count, means and stds, the file they came from): summary.json, or the summary.csv of a kfold run
    written before summary.json existed."""
    if (path / "summary.json").is_file():
        return read_summary_json(path / "summary.json"), "summary.json"
    if (path / "summary.csv").is_file():
        return read_summary(path / "summary.csv"), "summary.csv"
    return None, ""


def read_summary(path: Path) -> dict[str, Any] | None:
    """Fold count, mean and std of each metric from a kfold summary.csv; None when it cannot be understood.

    Only for kfold runs written before summary.json, which ``read_summary_json`` reads without guessing.

    Expected (kfold.py's layout): a label column (``model``) with one row per fold (fold_1, ... or 1, ...)
    plus rows labelled mean and std, and columns loss, accuracy, auc, macro_f1. With a ``data`` column only
    its ``val`` rows count; other rows (pooled_oof, test-folder and ensemble rows) are ignored.
    """
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    cols = {str(c).strip().lower().replace("-", "_").replace(" ", "_"): c for c in df.columns}
    if "accuracy" not in cols:
        return None
    if "data" in cols:  # kfold.py marks held-out-fold rows data=val and test-folder rows data=test
        df = df[df[cols["data"]].astype(str).str.strip().str.lower().isin(["val", "validation"])]
    def lowered(c):
        return df[c].astype(str).str.strip().str.lower()

    label_col = next((c for c in df.columns if lowered(c).eq("mean").any()), None)
    if label_col is None:
        return None
    labels = lowered(label_col)
    mean_row = df[labels == "mean"].iloc[0]
    std_rows = df[labels == "std"]
    k = int(labels.str.fullmatch(r"(fold[_ ]?)?\d+").sum())
    out: dict[str, Any] = {"k": k, "mean": {}, "std": {}}
    for key in METRIC_KEYS:
        if key in cols:
            out["mean"][key] = _f(mean_row[cols[key]])
            out["std"][key] = _f(std_rows.iloc[0][cols[key]]) if len(std_rows) else math.nan
    return out


def _t_interval(mean: float, std: float, k: int) -> tuple[float, float]:
    """95% t-interval for a mean over k folds (nan when k < 2)."""
    if k < 2 or not math.isfinite(std):
        return (math.nan, math.nan)
    half = float(stats.t.ppf(0.975, k - 1)) * std / math.sqrt(k)
    return (mean - half, mean + half)


def _read_kfold(path: Path, meta: dict[str, Any]) -> Row:
    row = Row(run=path.name, kind="kfold", path=str(path), ci_method="t over folds")
    folds = [d for d in _fold_dirs(path) if (d / "metrics.json").is_file()]
    fold_metrics = [Run(d).read_json("metrics.json") for d in folds]
    fold_metas = [Run(d).meta for d in folds if Run(d).has("meta.json")]
    summary, source = kfold_summary(path)

    # 1. the fold means: summary.json (or an older run's summary.csv), else averaged from the fold directories
    if summary is not None and summary["mean"]:
        k, mean, std = summary["k"] or len(folds), summary["mean"], summary["std"]
    elif fold_metrics:
        k = len(fold_metrics)
        table = {m: np.array([_f(fm.get(m)) for fm in fold_metrics]) for m in METRIC_KEYS}
        mean = {m: float(np.mean(v)) for m, v in table.items()}
        std = {m: float(np.std(v, ddof=1)) if k > 1 else math.nan for m, v in table.items()}
        source = "fold metrics"
    else:
        raise RunError(f"{path} is a kfold run with no summary.csv and no finished fold "
                       "(fold_*/metrics.json)")
    for m in METRIC_KEYS:
        setattr(row, m, _f(mean.get(m)))
    row.accuracy_ci_low, row.accuracy_ci_high = _t_interval(row.accuracy, _f(std.get("accuracy")), k)
    row.ci_method = f"t over {k} folds ({source})"

    # 2. descriptive fields from the folds (each a complete train run), falling back to the kfold's own files
    first = fold_metas[0] if fold_metas else {}
    _fill_train_meta(row, first)
    cfg = _config(path)
    row.arch = row.arch or meta.get("arch") or (cfg.get("model") or {}).get("arch")
    row.image_size = row.image_size or meta.get("image_size") or (cfg.get("data") or {}).get("image_size")
    row.classes = tuple(meta.get("class_names") or (fold_metrics[0].get("classes") if fold_metrics else ())
                        or row.classes)
    row.n_eval = sum(int(fm.get("n", 0)) for fm in fold_metrics) or None
    if fold_metas:
        row.epochs_run = _mean_of(fold_metas, "epochs_run")
        row.train_images_per_second = _mean_of(fold_metas, "train_images_per_second")
        seconds = [fm.get("train_seconds") for fm in fold_metas]
        row.train_seconds = round(sum(seconds), 2) if all(s is not None for s in seconds) else None
    model = next((d / "model.keras" for d in folds if (d / "model.keras").is_file()), None)
    row.model_path = str(model) if model else None
    data = (cfg.get("data") or {}).get("path")
    row.eval_set = f"{k}-fold cross-validation over {data} (seed {cfg.get('seed')})"
    oof = path / "oof_predictions.csv"
    predictions = [oof] if oof.is_file() else [d / "predictions.csv" for d in folds]
    row.eval_key = _paths_key(predictions) or row.eval_set
    return row


def _mean_of(metas: list[dict[str, Any]], key: str) -> float | None:
    values = [m.get(key) for m in metas if m.get(key) is not None]
    return round(float(np.mean(values)), 2) if values else None


def read_run(path: str | Path) -> Row:
    """One row from a finished train, evaluate or kfold run; RunError says why a folder cannot be used."""
    run = Run.open(path)  # RunError: missing, not a folder, not a run directory (no meta.json) / damaged
    kind = _kind(run)
    run.check_complete()
    reader = {"train": _read_train, "evaluate": _read_evaluate, "kfold": _read_kfold}[kind]
    row = reader(run.path, run.meta)
    if not math.isfinite(row.accuracy):
        raise RunError(f"{run.path} has no accuracy in its metrics")
    return row


# --------------------------------------------------------------------------------------- grouping, sorting


def assign_cohorts(rows: list[Row]) -> tuple[dict[str, str], list[str]]:
    """Letter rows by (class set, evaluated images); return {letter: description} and warnings when mixed."""
    keys: dict[tuple, str] = {}
    described: dict[str, str] = {}
    for row in rows:
        key = (row.classes, row.eval_key)
        if key not in keys:
            letter = _letter(len(keys))
            keys[key] = letter
            described[letter] = f"classes {', '.join(row.classes) or 'unknown'}; evaluated on {row.eval_set}"
        row.cohort = keys[key]
    warnings = []
    if len(keys) > 1:
        class_sets = {k[0] for k in keys}
        eval_sets = {k[1] for k in keys}
        what = [w for w, n in (("class sets", len(class_sets)), ("evaluation data", len(eval_sets))) if n > 1]
        warnings.append(f"these runs are not all comparable: they differ in {' and '.join(what)}. They are "
                        f"split into cohorts {', '.join(described)}; compare numbers only within a cohort.")
    return described, warnings


def _letter(i: int) -> str:
    letters = string.ascii_uppercase
    return letters[i] if i < len(letters) else f"{letters[i // len(letters) - 1]}{letters[i % len(letters)]}"


def normalise_sort_key(key: str) -> str:
    k = key.strip().lower().replace("-", "_")
    k = {"f1": "macro_f1", "images_per_second": "train_images_per_second", "time": "train_seconds",
         "inference": "inference_ms", "name": "run"}.get(k, k)
    if k not in SORT_KEYS:
        hint = did_you_mean(k, SORT_KEYS, n=2, cutoff=0.5)
        raise ConfigError(f"--sort {key!r} is not a column{hint}; choose one of {', '.join(SORT_KEYS)}")
    return k


def sort_rows(rows: list[Row], key: str | None) -> list[Row]:
    """Cohorts stay together (first-seen order); within one, best first by ``key``; missing values last."""
    order = {c: i for i, c in enumerate(dict.fromkeys(r.cohort for r in rows))}
    if not key:
        return sorted(rows, key=lambda r: order[r.cohort])
    key = normalise_sort_key(key)
    higher_better = SORT_KEYS[key]

    def rank(r: Row):
        v = getattr(r, key)
        missing = v is None or (isinstance(v, float) and not math.isfinite(v))
        if isinstance(v, str) or missing:
            return (order[r.cohort], missing, 0.0, "" if missing else v)
        return (order[r.cohort], False, -v if higher_better else v, "")

    return sorted(rows, key=rank)


