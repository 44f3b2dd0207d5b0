"""What a k-fold run found: per-fold rows, pooled out-of-fold metrics and the ensemble's temperature, the
test-folder ensemble, and summary.csv / summary.json / summary.md. The ``kfold`` command orchestrates; this
module computes and writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from .. import operating_point, plots
from ..binary import truth_of_classes
from ..config import Config
from ..data import ImageSpec, LoadedImages, list_images, load_images
from ..dedup import count_groups
from ..errors import DataError, RunError
from ..groups import describe, patient_ids, sides_summary, split_groups, unit_name, unit_of
from ..metrics import (
    ECE_BINS,
    binary_from_probs,
    binary_per_source,
    calibration_figures,
    compute_metrics,
    cross_fitted,
    fit_temperature,
    per_source_metrics,
    reliability,
    scale,
)
from ..models.loading import load_kfold_ensemble, stored_temperature
from ..plots import atomic_save_figure
from ..report import binary_markdown, per_source_markdown, write_metrics, write_predictions
from ..runs import atomic_write_json, atomic_write_text, markdown_table, write_csv, write_meta, write_skipped
from ..scanners import ScanOptions
from ..splits import FoldPlan
from . import scorer
from .results import METRIC_KEYS as METRICS
from .run import Run
from .trainer import validation_steers


@dataclass
class KFoldResult:
    """What a kfold call did and found; ``rows`` are summary.csv's rows."""

    run_dir: Path
    n_folds: int
    trained: list[int]
    reused: list[int]
    n_images: int
    duplicate_groups: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    test_in_train: int | None = None
    by: str = "stratified"
    per_source: dict[str, Any] = field(default_factory=dict)  # pooled out-of-fold metrics per collection
    calibration: dict[str, Any] | None = None  # the ensemble's temperature report (calibration.json), if fitted
    binary: dict[str, Any] = field(default_factory=dict)  # oof_metrics.json: binary, binary_per_source, notumor_doubt
    test_dir: str | None = None


def _row(model: str, data: str, m: dict[str, Any]) -> dict[str, Any]:
    lo, hi = m.get("accuracy_ci95") or (None, None)
    return {"model": model, "data": data, "n": m.get("n"), **{k: _number(m[k]) for k in METRICS},
            "accuracy_ci_low": _number(lo), "accuracy_ci_high": _number(hi),
            "accuracy_ci_resampling": (m.get("interval") or {}).get("text", "resampling images")}


def _number(v: Any) -> float:
    """A metric as a float; null (NaN in JSON, e.g. AUC on a one-class fold) as NaN."""
    return float("nan") if v is None else float(v)


def _mean_std_rows(rows: list[dict[str, Any]], data: str) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (ddof=1) of each headline metric over the fold rows."""
    values = {k: np.array([r[k] for r in rows], dtype=float) for k in METRICS}
    nan = float("nan")
    mean = {"model": "mean", "data": data, "n": None, **{k: float(v.mean()) for k, v in values.items()},
            "accuracy_ci_low": nan, "accuracy_ci_high": nan, "accuracy_ci_resampling": None}
    std = {"model": "std", "data": data, "n": None,
           **{k: float(v.std(ddof=1)) if len(v) > 1 else nan for k, v in values.items()},
           "accuracy_ci_low": nan, "accuracy_ci_high": nan, "accuracy_ci_resampling": None}
    return [mean, std]


def summarize(cfg: Config, run_dir: Path, plan: FoldPlan) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-fold validation rows read back from the fold runs (trained now or reused), their mean and std, and
    pooled OOF; returns (the rows, the pooled out-of-fold metrics with the ensemble's calibration).

    Writes oof_predictions.csv, oof_metrics.json and the OOF confusion matrices and per-fold accuracy plot.
    """
    k, names = plan.n_folds, plan.loaded.class_names
    fold_rows = []
    for i in range(1, k + 1):
        m = Run(run_dir / f"fold_{i}").read_json("metrics.json")
        fold_rows.append(_row(plan.fold_name(i), "val", m))
    probs = read_oof(run_dir, plan)
    pooled = compute_metrics(plan.loaded.labels, probs, names, cfg.eval.bootstrap, cfg.seed, plan.groups,
                             unit_name(cfg.data, plan.loaded.paths))
    if len(plan.loaded.source_names) > 1:
        pooled["per_source"] = per_source_metrics(plan.loaded.labels, probs, plan.loaded.sources, names)
    add_tumour_or_not(pooled, cfg, plan, probs)
    if cfg.eval.calibrate and plan.by == "source":
        # each collection's predictions come from a model that never saw it (and may lack a class): a temperature
        # fitted on them describes the transfer, not the ensemble, and does not carry from one collection to the next
        pooled["calibration"] = {"temperature": 1.0, "fitted_on": None, "after_is": "not fitted",
                                 "why": "leave-one-collection-out: the folds' predictions are transfer to an unseen "
                                        "collection; calibrate the model you deploy on scans of the site it serves"}
    elif cfg.eval.calibrate:
        pooled["calibration"] = calibrate_ensemble(run_dir, plan, probs)
    doubt = operating_point.for_kfold(cfg, plan, probs, (pooled.get("calibration") or {}).get("temperature", 1.0))
    if doubt is not None:
        pooled["notumor_doubt"] = doubt
    _write_oof(run_dir, plan, probs)
    atomic_write_json(run_dir / "oof_metrics.json", pooled)
    cm = np.asarray(pooled["confusion_matrix"])
    atomic_save_figure(plots.confusion_matrix_figure(cm, list(names), title="pooled out-of-fold confusion"),
                       run_dir / "plots" / "confusion_matrix_oof.png")
    atomic_save_figure(plots.confusion_matrix_figure(cm, list(names), normalize=True,
                                                     title="pooled out-of-fold confusion matrix (recall)"),
                       run_dir / "plots" / "confusion_matrix_oof_normalized.png")
    atomic_save_figure(_accuracy_figure(fold_rows, f"{cfg.model.arch}: accuracy on each held-out fold"),
                       run_dir / "plots" / "fold_accuracy.png")
    return [*fold_rows, *_mean_std_rows(fold_rows, "val"), _row("pooled_oof", "val", pooled)], pooled


def add_tumour_or_not(pooled: dict[str, Any], cfg: Config, plan: FoldPlan, probs: np.ndarray) -> None:
    """oof_metrics.json's tumour-or-not figures (tumour = any class but notumor), pooled and per collection, with
    intervals resampling the fold plan's groups (a model without a notumor class: nothing)."""
    loaded = plan.loaded
    truth = truth_of_classes(loaded.labels, loaded.class_names)
    if truth is None:
        return
    unit, args = unit_name(cfg.data, loaded.paths), (cfg.eval.bootstrap, cfg.seed)
    keys = patient_ids(cfg.data.groups, loaded.paths)
    pooled["binary"] = binary_from_probs(truth, probs, loaded.class_names, None, plan.groups, unit, *args, keys)
    if len(loaded.source_names) > 1:
        pooled["binary_per_source"] = binary_per_source(truth, probs, loaded.class_names, loaded.sources, None,
                                                        plan.groups, unit, *args, keys)


def groups_per_fold(plan: FoldPlan) -> dict[str, Any]:
    """meta.json's groups_per_fold: the groups (and images) each fold holds, and how many it shares."""
    return sides_summary(plan.groups, {str(i): np.flatnonzero(plan.folds == i) for i in range(1, plan.n_folds + 1)})


def calibrate_ensemble(run_dir: Path, plan: FoldPlan, probs: np.ndarray) -> dict[str, Any]:
    """calibration.json of the k-fold run: a temperature fitted on the pooled out-of-fold predictions (each made
    by a model that never saw the image), used by the ensemble in evaluate, predict and serve. 'after' is
    cross-fitted by fold: each fold's predictions scaled by the temperature fitted on the other folds'.

    The ensemble averages the fold models, which tends to soften its probabilities, so a temperature fitted on
    single-model predictions may over-correct it a little; the fold models keep their own calibration.json."""
    labels = plan.loaded.labels
    temperature = fit_temperature(labels, probs)
    after, temps = cross_fitted(labels, probs, plan.folds)
    report = {"temperature": temperature, "fitted_on": f"{len(labels)} pooled out-of-fold predictions",
              "n": int(len(labels)), "ece_bins": ECE_BINS, "before": calibration_figures(labels, probs),
              "after": calibration_figures(labels, after),
              "after_is": "cross-fitted by fold (each fold scaled by the temperature fitted on the others)",
              "cross_fit_temperatures": temps}
    atomic_write_json(run_dir / "calibration.json", report)
    atomic_save_figure(plots.reliability_figure({"before": reliability(labels, probs)["bins"],
                                                 "after": reliability(labels, after)["bins"]},
                                                f"out-of-fold reliability (T = {temperature:.2f})"),
                       run_dir / "plots" / "reliability_oof.png")
    return report


def read_oof(run_dir: Path, plan: FoldPlan) -> np.ndarray:
    """(n, classes) out-of-fold probabilities in folds.csv order, from each fold's predictions.csv."""
    names = plan.loaded.class_names
    index = {p: i for i, p in enumerate(plan.loaded.paths)}
    probs = np.full((len(index), len(names)), np.nan)
    for i in range(1, plan.n_folds + 1):
        df = pd.read_csv(run_dir / f"fold_{i}" / "predictions.csv")
        rows = [index.get(p, -1) for p in df["path"]]
        expected = set(np.flatnonzero(plan.folds == i).tolist())
        if -1 in rows or set(rows) != expected or len(rows) != len(expected):
            raise RunError(f"fold_{i}/predictions.csv does not list exactly the images folds.csv holds out "
                           f"in fold {i}; rerun that fold (delete fold_{i}/ and use --resume)")
        probs[rows] = df[[f"p_{c}" for c in names]].to_numpy(dtype=float)
    return probs


def _write_oof(run_dir: Path, plan: FoldPlan, probs: np.ndarray) -> None:
    """oof_predictions.csv: every image exactly once: true class, fold, prediction and probabilities."""
    names, loaded = plan.loaded.class_names, plan.loaded
    several = len(loaded.source_names) > 1
    sources = loaded.sources if several else [None] * len(loaded.paths)
    write_csv(run_dir / "oof_predictions.csv", ["path", *(["source"] if several else []), "true", "fold",
                                                "predicted", *[f"p_{c}" for c in names]],
              ([p, *([s] if several else []), names[int(y)], int(f), names[int(np.argmax(row))],
                *[f"{v:.6f}" for v in row]]
               for p, s, y, f, row in zip(loaded.paths, sources, loaded.labels, plan.folds, probs, strict=True)))


def evaluate_test(cfg: Config, run_dir: Path, plan: FoldPlan, test_dir: str | Path,
                  temperature: float = 1.0) -> tuple[list[dict[str, Any]], int]:
    """Score every fold model and the ensemble (mean probabilities, then the ensemble's ``temperature``) on a test
    folder decoded once, with the fold models loaded as evaluate and serve load them (``load_kfold_ensemble``).

    Returns the test rows and how many test images have a pixel-identical copy in the training folder.
    """
    names = plan.loaded.class_names
    listing = list_images(test_dir, cfg.data.classes, require_all=False, scan_options=ScanOptions.from_config(cfg.data))
    if tuple(listing.class_names) != tuple(names):
        raise DataError(f"{test_dir} classes {listing.class_names} differ from the training classes {names}")
    test = load_images(listing, ImageSpec.of(cfg.data))
    test_groups, found = split_groups(cfg.data, test, strict=False)  # the unit the test intervals resample
    seen = set(plan.loaded.digests)
    in_train = sum(d in seen for d in test.digests)
    ensemble = load_kfold_ensemble(run_dir)
    rows, all_probs = [], []
    for fold, member in zip(ensemble.meta["ensemble_of"], ensemble.members, strict=True):
        raw = scorer.probabilities(member, test.images, cfg.train.batch_size, cfg.eval.tta)
        all_probs.append(raw)
        probs = scale(raw, stored_temperature(run_dir / fold))
        m = compute_metrics(test.labels, probs, names, cfg.eval.bootstrap, cfg.seed, test_groups, unit_of(found))
        _write_test(run_dir / fold / "test", m, test, probs, f"fold {fold[5:]} model on {test_dir}")
        rows.append(_row(plan.fold_name(int(fold[5:])), "test", m))
    del ensemble
    keras.backend.clear_session()
    mean = scale(np.mean(all_probs, axis=0), temperature)  # the ensemble as evaluate and serve see it
    m = compute_metrics(test.labels, mean, names, cfg.eval.bootstrap, cfg.seed, test_groups, unit_of(found))
    _write_test(run_dir / "ensemble_test", m, test, mean,
                f"ensemble of {plan.n_folds} fold models (mean probabilities) on {test_dir}")
    write_skipped(run_dir / "ensemble_test", test.skipped)
    rows += [*_mean_std_rows(rows, "test"), _row("ensemble", "test", m)]
    bars = [r for r in rows if r["model"] not in ("mean", "std")]
    atomic_save_figure(_accuracy_figure(bars, f"{cfg.model.arch}: test accuracy"),
                       run_dir / "plots" / "test_accuracy.png")
    write_meta(run_dir, test_dir=str(test_dir), n_test=m["n"], test_images_in_training_folder=in_train)
    return rows, in_train


def _write_test(out: Path, m: dict[str, Any], test: LoadedImages, probs: np.ndarray, title: str) -> None:
    write_metrics(out, m, title)
    write_predictions(out / "predictions.csv", test.paths, test.labels, probs, test.class_names)


def _accuracy_figure(rows: list[dict[str, Any]], title: str):
    return plots.bar_figure([r["model"] for r in rows], [r["accuracy"] for r in rows],
                            [(r["accuracy_ci_low"], r["accuracy_ci_high"]) for r in rows],
                            ylabel="accuracy (95% bootstrap CI)", title=title)


SUMMARY_COLUMNS = ["model", "data", "n", *METRICS, "accuracy_ci_low", "accuracy_ci_high", "accuracy_ci_resampling"]


def write_summary(run_dir: Path, result: KFoldResult, cfg: Config, plan: FoldPlan) -> None:
    """summary.csv (full precision, one row per fold, mean, std, pooled OOF, test rows), summary.json (the same
    rows, structured, for ``compare``) and summary.md."""
    write_csv(run_dir / "summary.csv", SUMMARY_COLUMNS, ([_cell(r[c]) for c in SUMMARY_COLUMNS] for r in result.rows))
    atomic_write_json(run_dir / "summary.json", summary_json(result))
    atomic_write_text(run_dir / "summary.md", summary_markdown(result, cfg, plan))


def summary_json(result: KFoldResult) -> dict[str, Any]:
    """summary.json: per data part (``val``: held-out folds, ``test``: the test folder), each model row by name
    (fold_1 ... fold_k, mean, std, pooled_oof or ensemble) with its metrics (NaN is written as null)."""
    parts: dict[str, dict[str, Any]] = {}
    for r in result.rows:
        parts.setdefault(r["data"], {})[r["model"]] = {c: r[c] for c in SUMMARY_COLUMNS[2:]}
    return {"n_folds": result.n_folds, "n_images": result.n_images, "duplicate_groups": result.duplicate_groups,
            "by": result.by, "metrics": list(METRICS), "test_images_in_training_folder": result.test_in_train,
            **parts, "per_source": result.per_source}


def _cell(v: Any) -> Any:
    """Floats at full precision (repr), so summary.csv reproduces the fold numbers exactly."""
    return "" if v is None else repr(float(v)) if isinstance(v, float) else v


def summary_markdown(result: KFoldResult, cfg: Config, plan: FoldPlan) -> str:
    """summary.md: how the folds were made and trained, the held-out and per-source tables, the ensemble's
    calibration and the test folder. Long because it is one document read top to bottom; each part is a few
    lines of text around a table."""
    loaded, loco = plan.loaded, result.by == "source"
    sources = {n: loaded.sources.count(n) for n in loaded.source_names}
    class_names = list(loaded.class_names)
    folds_line = (
        f"- folds: leave one collection out (`--by source`): each fold trains on all collections but one and is "
        f"scored on the one left out; a training image with a copy in the held-out collection (duplicate groups, "
        f"`data.group_duplicates: {cfg.data.group_duplicates}`) is left out of that fold's training"
        if loco else
        f"- folds: scikit-learn StratifiedGroupKFold (shuffled, seed {cfg.seed}) over duplicate groups "
        f"(`data.group_duplicates: {cfg.data.group_duplicates}`): {result.duplicate_groups} groups hold more "
        f"than one image ({count_groups(plan.groups)[1]} images); each group sits in one fold")
    lines = [
        f"# {'Leave-one-collection-out' if loco else f'{result.n_folds}-fold'} cross-validation: "
        f"{cfg.model.arch}", "",
        f"- data: {', '.join(f'`{p}`' for p in cfg.data_paths)}, {result.n_images} images, "
        f"classes {', '.join(class_names)}"
        + (f"; collections {', '.join(f'{n} ({c})' for n, c in sources.items())}" if len(sources) > 1 else ""),
        folds_line, *_groups_line(describe(cfg.data, loaded.paths, plan.groups, plan.grouping), groups_per_fold(plan)),
        f"- every fold: a fresh model trained as `train` trains ({_recipe(cfg)}), scored on the held-out fold",
        "- the held-out fold never steers training: " + (
            f"an inner split ({cfg.data.val_split:g} of each fold's training part, duplicate groups kept "
            "together) picks the best epoch, lowers the rate and stops early, so the folds train on fewer images"
            if validation_steers(cfg) else
            "the recipe keeps the last epoch of a fixed schedule, so nothing is chosen by validation data "
            "(the held-out fold only appears in the training curves)"),
        "- mean and std are over the folds (std: sample, ddof=1); pooled_oof scores all held-out "
        "predictions at once",
        f"- accuracy over the folds: {_mean_pm_std(result.rows, 'val')}",
        "", "## Held-out " + ("collections" if loco else "folds"), "",
        *_table([r for r in result.rows if r["data"] == "val"]),
    ]
    if result.per_source:
        lines += ["", "## Per source", "",
                  ("Each collection scored by the fold model that never saw it (the leave-one-collection-out "
                   "estimate of a new hospital); AUC over the classes the collection holds, '-' where it holds "
                   "none of a class." if loco else
                   "The pooled out-of-fold predictions split by the collection each image came from; AUC over the "
                   "classes the collection holds, '-' where it holds none of a class."), "",
                  *per_source_markdown(result.per_source, class_names)]
    if result.binary.get("binary"):
        lines += ["", "## Tumour or not", "", "The pooled out-of-fold answers read as tumour (any class but notumor) "
                  "or not; missed tumours counts every answer as accepted (the folds' gates are not pooled).",
                  *binary_markdown(result.binary["binary"], result.binary.get("binary_per_source")),
                  *operating_point.markdown(result.binary.get("notumor_doubt") or {}, str(result.run_dir))]
    if loco and cfg.eval.calibrate:
        lines += ["", "## Calibration", "", "No temperature is fitted for the ensemble of a leave-one-collection-out "
                  "run: each collection's predictions come from a model that never saw it, so a temperature fitted on "
                  "them describes the transfer and does not carry from one collection to the next. Calibrate the "
                  "model you deploy on scans of the site it serves."]
    elif result.calibration and "before" in result.calibration:
        c = result.calibration
        lines += ["", "## Calibration", "",
                  f"Temperature {c['temperature']:.3f} fitted on the {c['fitted_on']}, used by the ensemble; ECE "
                  f"over {c['ece_bins']} equal-width bins, 'after' {c['after_is']}.", "",
                  *markdown_table(["", "ECE", "Brier", "NLL"],
                                  [[w, f"{c[w]['ece']:.4f}", f"{c[w]['brier']:.4f}", f"{c[w]['nll']:.4f}"]
                                   for w in ("before", "after")])]
    test = [r for r in result.rows if r["data"] == "test"]
    if test:
        lines += ["", f"## Test folder `{result.test_dir}`", "",
                  "Each fold model, their mean and std, and the ensemble (the mean of the fold models' "
                  "probabilities).",
                  f"Test images with a pixel-identical copy in the training folder: {result.test_in_train} "
                  "(they are scored as well; their scores are not independent of training).", "",
                  *_table(test)]
    return "\n".join(lines) + "\n"


def _groups_line(g: dict[str, Any], per: dict[str, Any]) -> list[str]:
    """The grouping (data.groups patients joined with duplicates and volumes) and the groups in each fold."""
    if not g:
        return []
    who = (f"{g['patients']} patients from `data.groups: {g['spec']}` ({g['unmatched']} images named by no row "
           "or match stay alone), joined with duplicate and volume groups" if "patients" in g
           else "duplicate and volume groups")
    shared = sum(v["shared"] for v in per.values())
    return [f"- groups: {g['groups']} ({who}); groups per fold "
            + ", ".join(f"{k}: {v['groups']} ({v['images']} images)" for k, v in per.items())
            + f"; groups also found in another fold, summed over folds: {shared}"
            + (" (only --by source can leave any: a copy published in two collections)" if shared else "")] + [
        f"- **warning:** {w}" for w in g.get("warnings", [])]


def _recipe(cfg: Config) -> str:
    t = cfg.train
    if t.early_stopping_patience > 0:
        return (f"{t.epochs} epochs at most, {t.lr_schedule} schedule, {t.checkpoint} checkpoint, early stopping "
                f"after {t.early_stopping_patience}")
    return f"{t.epochs} epochs, {t.lr_schedule} schedule, {t.checkpoint} checkpoint"


def _mean_pm_std(rows: list[dict[str, Any]], data: str, key: str = "accuracy") -> str:
    by = {r["model"]: r[key] for r in rows if r["data"] == data}
    return f"{by['mean']:.4f} +- {by['std']:.4f}" if "mean" in by else "n/a"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    cells = []
    for r in rows:
        lo, hi = r["accuracy_ci_low"], r["accuracy_ci_high"]
        cells.append([{"mean": "**mean**", "std": "**std**"}.get(r["model"], r["model"]),
                      "" if r["n"] is None else r["n"], f"{r['loss']:.4f}", f"{r['accuracy']:.4f}",
                      "" if np.isnan(lo) else f"{lo:.4f} - {hi:.4f} ({r.get('accuracy_ci_resampling')})",
                      f"{r['auc']:.4f}", f"{r['macro_f1']:.4f}"])
    return markdown_table(["model", "n", "loss", "accuracy", "95% CI", "AUC", "macro F1"], cells)
