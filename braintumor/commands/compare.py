"""Side-by-side comparison of finished runs (train, evaluate, kfold), flagging runs that are not comparable.

Each run becomes one row of headline numbers. Runs are grouped into cohorts by class set and by the exact set
of images their metrics were computed on (the paths in predictions.csv), so numbers from different test data
are never shown as if they were comparable.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .. import plots
from ..config import read_yaml
from ..errors import ConfigError, RunError, did_you_mean
from ..plots import atomic_save_figure
from ..runs import (
    atomic_write_json,
    atomic_write_text,
    new_run_dir,
    now,
    read_json,
    read_meta,
    run_status,
    versions,
    write_meta,
)

# Sort keys and whether a higher value is better (rows are sorted best first).
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


@dataclass
class Comparison:
    rows: list[Row]
    skipped: list[tuple[str, str]]  # (path, reason)
    warnings: list[str]
    cohorts: dict[str, str]  # letter -> description


# --------------------------------------------------------------------------------------------- reading runs


def _f(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _kind(path: Path, meta: dict[str, Any]) -> str:
    command = meta.get("command")
    if command in ("train", "evaluate", "kfold"):
        return command
    if command:
        raise RunError(f"{path} is a {command} run; compare reads train, evaluate and kfold runs")
    if (path / "summary.csv").is_file() or any(path.glob("fold_*/meta.json")):
        return "kfold"
    if "source_run" in meta:
        return "evaluate"
    if "class_names" in meta:
        return "train"
    raise RunError(f"{path} is not a train, evaluate or kfold run (meta.json names no command)")


def _check_complete(path: Path, meta: dict[str, Any]) -> None:
    status = meta.get("status")
    if status is not None and status != "complete":
        why = f": {meta['error']}" if meta.get("error") else ""
        raise RunError(f"{path} is incomplete (status: {status}{why}); nothing to compare until it finishes")


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
    _fill_metrics(row, read_json(path / "metrics.json"))
    _fill_train_meta(row, meta)
    row.eval_set = _val_description(_config(path))
    row.eval_key = _paths_key([path / "predictions.csv"]) or row.eval_set
    row.model_path = str(path / "model.keras") if (path / "model.keras").is_file() else None
    return row


def _read_evaluate(path: Path, meta: dict[str, Any]) -> Row:
    row = Row(run=path.name, kind="evaluate", path=str(path))
    _fill_metrics(row, read_json(path / "metrics.json"))
    source = Path(meta.get("source_run", ""))
    if meta.get("source_run") and (source / "meta.json").is_file():
        _fill_train_meta(row, read_meta(source))
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
    fold_metrics = [read_json(d / "metrics.json") for d in folds]
    fold_metas = [read_meta(d) for d in folds if (d / "meta.json").is_file()]
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
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path} does not exist")
    if not path.is_dir():
        raise RunError(f"{path} is not a directory")
    meta = read_meta(path)  # RunError: not a run directory (no meta.json) / damaged
    kind = _kind(path, meta)
    _check_complete(path, meta)
    reader = {"train": _read_train, "evaluate": _read_evaluate, "kfold": _read_kfold}[kind]
    row = reader(path, meta)
    if not math.isfinite(row.accuracy):
        raise RunError(f"{path} has no accuracy in its metrics")
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


# --------------------------------------------------------------------------------------- inference timing


def single_image_ms(model, input_shape: tuple[int, ...], repeats: int = 30, warmup: int = 5,
                    seed: int = 0) -> float:
    """Median milliseconds of one compiled single-image forward pass (``model(x, training=False)``).

    The call is a ``tf.function`` without XLA (explicit, like training), traced and warmed up first; each
    timed call ends with ``.numpy()`` so the time includes getting the probabilities back.
    """
    import tensorflow as tf  # lazy: only timing needs TensorFlow, so compare --no-measure starts in a second

    fn = tf.function(lambda x: model(x, training=False), jit_compile=False, reduce_retracing=True)
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.integers(0, 256, size=(1, *input_shape)).astype(np.float32))  # (1, h, w, c) 0-255
    for _ in range(max(1, warmup)):
        fn(x).numpy()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn(x).numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def measure_inference(rows: list[Row], repeats: int = 30) -> None:
    """Fill inference_ms for rows that did not record it, by loading each model once and timing it here."""
    import keras  # lazy, as in single_image_ms

    from .. import models  # noqa: F401  (registers the custom layers for safe loading)

    cache: dict[str, float] = {}
    for row in rows:
        if row.inference_source == "recorded":
            continue
        if not row.model_path or not row.input_shape:
            row.inference_source = "no model"
            continue
        if row.model_path not in cache:
            keras.backend.clear_session()
            model = keras.models.load_model(row.model_path, safe_mode=True)
            cache[row.model_path] = single_image_ms(model, row.input_shape, repeats)
            del model
        row.inference_ms, row.inference_source = round(cache[row.model_path], 3), "measured"


# --------------------------------------------------------------------------------------------- output


CSV_COLUMNS = ["run", "kind", "arch", "params", "image_size", "epochs_run", "n_eval", "accuracy",
               "accuracy_ci_low", "accuracy_ci_high", "ci_method", "auc", "loss", "macro_f1", "train_seconds",
               "train_images_per_second", "inference_ms", "inference_source", "cohort", "classes", "eval_set",
               "path"]


def to_frame(rows: list[Row]):
    records = []
    for r in rows:
        d = asdict(r)
        d["classes"] = " ".join(r.classes)
        records.append({c: d[c] for c in CSV_COLUMNS})
    return pd.DataFrame.from_records(records, columns=CSV_COLUMNS)


def _num(v: Any, fmt: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def display_cells(r: Row) -> dict[str, str]:
    """The human-readable cells shared by the Markdown and terminal tables."""
    unit = r.ci_method.removeprefix("bootstrap ").split(" (")[0]  # 'resampling 46 patients', 't over 5 folds'
    ci = (f" ({_num(r.accuracy_ci_low, '.3f')}-{_num(r.accuracy_ci_high, '.3f')}, {unit})"
          if math.isfinite(r.accuracy_ci_low) else "")
    return {
        "run": r.run, "kind": r.kind, "arch": r.arch or "-",
        "params": _count(r.params),
        "size": _num(r.image_size, "d") if isinstance(r.image_size, int) else "-",
        "epochs": _num(r.epochs_run, "g"),
        "accuracy (95% CI)": f"{_num(r.accuracy)}{ci}",
        "AUC": _num(r.auc), "loss": _num(r.loss), "macro-F1": _num(r.macro_f1),
        "train time": _duration(r.train_seconds),
        "train img/s": _num(r.train_images_per_second, ".1f"),
        "inference ms": _num(r.inference_ms, ".2f"),
        "cohort": r.cohort,
    }


def _count(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def markdown(cmp: Comparison, title: str = "Run comparison") -> str:
    """comparison.md: the table, what each cohort is, how inference was timed, and what was skipped."""
    cells = [display_cells(r) for r in cmp.rows]
    head = list(cells[0]) if cells else list(display_cells(Row("", "", "")))
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c[h].replace("|", "\\|") for h in head) + " |" for c in cells]
    lines += ["", "Cohorts (compare numbers only within one):", ""]
    lines += [f"- **{k}**: {v}" for k, v in cmp.cohorts.items()]
    if cmp.warnings:
        lines += [""] + [f"> **Warning:** {w}" for w in cmp.warnings]
    sources = sorted({r.inference_source for r in cmp.rows})
    lines += ["", "Accuracy intervals: 95% percentile bootstrap for train and evaluate runs, resampling the unit "
              "named beside each (patients where data.groups knows them, else duplicate and volume groups, else "
              "images); for kfold runs the fold mean with a 95% t-interval over the folds. "
              f"Inference: {inference_note(sources)}"]
    if cmp.skipped:
        lines += ["", "Skipped:", ""] + [f"- `{p}`: {why}" for p, why in cmp.skipped]
    return "\n".join(lines) + "\n"


def inference_note(sources: list[str]) -> str:
    notes = {
        "measured": "`measured` = median of a compiled single-image call (batch 1, tf.function, no XLA), "
                    "timed on this machine when the comparison was made",
        "recorded": f"`recorded` = the run's own `{RECORDED_INFERENCE_KEY}` in meta.json",
        "no model": "`no model` = the run has no model.keras to time",
        "not measured": "`not measured` = timing was switched off (--no-measure)",
    }
    return "; ".join(notes[s] for s in sources if s in notes) + "."


def figure(rows: list[Row]):
    """Accuracy per run with its 95% interval as whiskers; labels carry the cohort when there are several."""
    several = len({r.cohort for r in rows}) > 1
    labels = [f"{r.run} [{r.cohort}]" if several else r.run for r in rows]
    values = [r.accuracy for r in rows]
    errors = [(r.accuracy_ci_low if math.isfinite(r.accuracy_ci_low) else r.accuracy,
               r.accuracy_ci_high if math.isfinite(r.accuracy_ci_high) else r.accuracy) for r in rows]
    return plots.bar_figure(labels, values, errors, ylabel="accuracy (95% CI)", title="accuracy by run")


# --------------------------------------------------------------------------------------------- the command


def compare(paths: list[str | Path], sort: str | None = None, measure: bool = True,
            repeats: int = 30) -> Comparison:
    """Read every run, skipping (with the reason) what cannot be compared; group, time and sort the rest."""
    if sort:
        normalise_sort_key(sort)  # a bad key fails before any model is loaded
    rows, skipped, seen = [], [], set()
    for p in paths:
        key = str(Path(p).resolve())
        if key in seen:
            continue
        seen.add(key)
        try:
            rows.append(read_run(p))
        except RunError as e:
            skipped.append((str(p), str(e)))
    cohorts, warnings = assign_cohorts(rows)
    if measure:
        measure_inference(rows, repeats)
    return Comparison(sort_rows(rows, sort), skipped, warnings, cohorts)


def run_compare(paths: list[str | Path], runs_dir: str | Path = "runs", sort: str | None = None,
                measure: bool = True, repeats: int = 30, name: str | None = None) -> tuple[Path, Comparison]:
    """The ``compare`` command: runs/compare/<timestamp>/ with comparison.csv, .md and .png."""
    # 1. read and check everything before creating an output folder
    cmp = compare(paths, sort, measure, repeats)
    if not cmp.rows:
        reasons = "; ".join(f"{why}" for _, why in cmp.skipped) or "no run directories given"
        raise RunError(f"nothing to compare: {reasons}")

    # 2. the output folder, marked complete only when every file is written
    out = new_run_dir(runs_dir, "compare", None, name)
    write_meta(out, command="compare", status="running", started=now(), versions=versions(),
               inputs=[str(p) for p in paths], sort=sort, measured_inference=measure)
    with run_status(out):
        atomic_write_text(out / "comparison.csv", to_frame(cmp.rows).to_csv(index=False))
        atomic_write_text(out / "comparison.md", markdown(cmp))
        atomic_save_figure(figure(cmp.rows), out / "comparison.png")
        atomic_write_json(out / "skipped.json", [{"path": p, "reason": r} for p, r in cmp.skipped])
        write_meta(out, runs=len(cmp.rows), skipped=len(cmp.skipped), cohorts=cmp.cohorts,
                   warnings=cmp.warnings)
    return out, cmp
