"""Stratified group k-fold cross-validation over train.py's fit path, with out-of-fold and test summaries."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .. import guidance, models, plots, tracking  # noqa: F401  (models registers the custom layers)
from ..binary import truth_of_classes
from ..config import DEFAULT_FOLDS, Config, build, read_yaml
from ..data import ImageSpec, LoadedImages, list_images, load_images, split_train_val
from ..dedup import count_groups, multi_member_groups
from ..distribute import runs_dir_for_this_worker
from ..errors import ConfigError, DataError, RunError
from ..groups import describe, sides_summary, split_groups, unit_name, unit_of
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
from ..models import get_spec
from ..models.loading import predict, stored_temperature
from ..plots import atomic_save_figure
from ..report import binary_markdown, per_source_markdown, write_metrics, write_predictions
from ..runs import (
    atomic_write_json,
    atomic_write_text,
    fold_complete,
    markdown_table,
    new_run_dir,
    now,
    read_meta,
    run_status,
    start_run,
    write_csv,
    write_meta,
    write_skipped,
)
from ..scanners import ScanOptions
from . import train

# (fold 1..k, k) -> the Keras callbacks for that fold's fit (the CLI's progress display)
FoldCallbacks = Callable[[int, int], Sequence[Any]]
Log = Callable[[str], None]
METRICS = ("loss", "accuracy", "auc", "macro_f1")


@dataclass
class FoldPlan:
    """The decoded images, their duplicate groups and the fold (1..k) each image is held out in."""

    loaded: LoadedImages
    groups: np.ndarray  # (n,) group id: copies of one image share it
    folds: np.ndarray  # (n,) int in 1..n_folds
    n_folds: int
    by: str = "stratified"  # stratified: seeded StratifiedGroupKFold; source: fold i holds out collection i

    def fold_name(self, fold: int) -> str:
        """How reports name a fold: fold_3, or with --by source the collection it holds out."""
        return self.loaded.source_names[fold - 1] if self.by == "source" else f"fold_{fold}"


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


# --- folds -----------------------------------------------------------------------------------------------

def check_n_folds(n_folds: int, labels: np.ndarray | None = None, groups: np.ndarray | None = None,
                  class_names: Sequence[str] = ()) -> None:
    """Refuse a fold count that cannot give every fold at least one distinct image of every class."""
    if n_folds < 2:
        raise ConfigError(f"--folds {n_folds}: cross-validation needs at least 2 folds")
    if labels is None:
        return
    groups = np.arange(len(labels)) if groups is None else groups
    for c, name in enumerate(class_names):
        members = labels == c
        distinct = len(np.unique(groups[members]))  # identical copies can only ever sit in one fold
        if distinct == 0:
            raise DataError(f"class {name!r} has no readable images: add images to its folder or leave the "
                            f"class out of data.classes; --folds {n_folds} needs at least {n_folds} distinct "
                            "images per class")
        if n_folds > distinct:
            copies = f" ({int(members.sum())} files; identical copies count once)" \
                if distinct < members.sum() else ""
            raise ConfigError(f"--folds {n_folds}: class {name!r} has only {distinct} distinct images"
                              f"{copies}, so some folds would hold none of it; use --folds "
                              f"{max(distinct, 2)} or fewer")


def assign_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number (1..k) per image from StratifiedGroupKFold: a group never straddles two folds."""
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.zeros(len(labels), dtype=np.int64)
    for i, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups), start=1):
        folds[held_out] = i
    empty = [i for i in range(1, n_folds + 1) if not (folds == i).any()]
    if empty:
        raise DataError(f"fold(s) {empty} came out empty; use fewer --folds")
    return folds


BY = ("stratified", "source")


def plan_folds(cfg: Config, n_folds: int | None, by: str = "stratified") -> FoldPlan:
    """Decode the training folder(s) once (files in a stable order), group duplicates and assign folds: seeded
    stratified group folds, or (``by="source"``) one fold per collection, held out in turn."""
    if by not in BY:
        raise ConfigError(f"--by {by!r}: choose one of {', '.join(BY)}")
    if by == "source":
        loaded, groups = train.prepare_data(cfg)
        names = loaded.source_names
        if len(names) < 2:
            raise ConfigError("kfold --by source holds out one collection at a time and needs at least two: "
                              "--data NAME=DIR --data NAME2=DIR2")
        if n_folds is not None and n_folds != len(names):
            raise ConfigError(f"--folds {n_folds}: --by source makes one fold per collection ({len(names)}: "
                              f"{', '.join(names)}); drop --folds")
        folds = np.asarray([names.index(s) + 1 for s in loaded.sources], dtype=np.int64)
        return FoldPlan(loaded, groups, folds, len(names), by="source")
    n_folds = DEFAULT_FOLDS if n_folds is None else n_folds
    check_n_folds(n_folds)
    loaded, groups = train.prepare_data(cfg)
    check_n_folds(n_folds, loaded.labels, groups, loaded.class_names)
    return FoldPlan(loaded, groups, assign_folds(loaded.labels, groups, n_folds, cfg.seed), n_folds)


def training_side(plan: FoldPlan, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices) of a fold. A training image with a copy (its duplicate group) in the
    held-out fold is left out of training: stratified folds never split a group, so only collections held out
    with --by source lose images here (one image published in two collections)."""
    held_out = np.flatnonzero(plan.folds == fold)
    rest = np.flatnonzero(plan.folds != fold)
    return rest[~np.isin(plan.groups[rest], plan.groups[held_out])], held_out


def write_folds(run_dir: Path, plan: FoldPlan) -> None:
    """folds.csv: every image with its class, duplicate group and fold (--resume reads the folds back)."""
    names, loaded = plan.loaded.class_names, plan.loaded
    sources = loaded.sources if len(loaded.source_names) > 1 else [None] * len(loaded.paths)
    extra = ["source"] if len(loaded.source_names) > 1 else []
    write_csv(run_dir / "folds.csv", ["path", "label", "class", "group", "fold", *extra],
              ([p, int(y), names[int(y)], int(g), int(f), *([s] if extra else [])]
               for p, y, g, f, s in zip(loaded.paths, loaded.labels, plan.groups, plan.folds, sources, strict=True)))


def read_folds(run_dir: Path, loaded: LoadedImages) -> tuple[np.ndarray, np.ndarray]:
    """(groups, folds) from folds.csv, after checking it lists exactly the images decoded now."""
    path = run_dir / "folds.csv"
    if not path.is_file():
        raise RunError(f"{run_dir} has no folds.csv, so its folds cannot be reused; start a new kfold run")
    df = pd.read_csv(path)
    saved, now = df["path"].tolist(), list(loaded.paths)
    if saved != now:
        gone, new = sorted(set(saved) - set(now)), sorted(set(now) - set(saved))
        example = (new + gone)[0] if new or gone else "the file order"
        raise RunError(f"the data folder changed since {run_dir.name} started ({len(new)} image(s) new, "
                       f"{len(gone)} missing or unreadable, e.g. {example}); resuming would not reuse the "
                       "same folds, so start a new kfold run")
    if not np.array_equal(df["label"].to_numpy(), loaded.labels):
        raise RunError(f"class labels in {path} differ from the data folder's; start a new kfold run")
    return df["group"].to_numpy(dtype=np.int64), df["fold"].to_numpy(dtype=np.int64)


# --- running ---------------------------------------------------------------------------------------------

def run_kfold(cfg: Config, n_folds: int | None, test_dir: str | Path | None = None,
              fold_callbacks: FoldCallbacks | None = None, log: Log | None = None,
              plan_only: bool = False, by: str = "stratified") -> KFoldResult:
    """The ``kfold`` command: a new runs/kfold/<run>/ with one complete train run per fold and the summaries.

    1. decode, group duplicates and assign folds (a bad --folds fails here, before any run directory exists)
    2. write config.yaml, meta.json and folds.csv (``plan_only``: stop here, status ``planned``, so separate
       jobs can each train one fold with ``resume_kfold(run, only=i)``)
    3. fit each fold with train.fit_and_report, then summarise (and score the test folder)

    ``n_folds`` None: 5, or with ``by="source"`` (leave one collection out) one fold per collection.
    """
    get_spec(cfg.model.arch)  # fail on a bad architecture before decoding anything
    guidance.check(cfg)
    runs_dir = runs_dir_for_this_worker(cfg)
    tracking.prepare(cfg, runs_dir)  # and on a tracker's missing package
    log = log or _quiet
    plan = plan_folds(cfg, n_folds, by)
    n_folds = plan.n_folds

    run_dir = new_run_dir(runs_dir, "kfold", cfg.model.arch, cfg.name)
    start_run(run_dir, cfg, "kfold", n_folds=n_folds, test_dir=str(test_dir) if test_dir else None, by=plan.by)
    with tracking.tracked(cfg, run_dir, "kfold"), run_status(run_dir) as status:
        write_folds(run_dir, plan)
        write_skipped(run_dir, plan.loaded.skipped)
        write_meta(run_dir, **_plan_meta(cfg, plan))
        if plan_only:
            status.done = "planned"
            return KFoldResult(run_dir, n_folds, [], [], len(plan.loaded.paths), multi_member_groups(plan.groups))
        return _run(cfg, run_dir, plan, test_dir, fold_callbacks, log, status)


def resume_kfold(run_dir: str | Path, test_dir: str | Path | None = None,
                 fold_callbacks: FoldCallbacks | None = None, log: Log | None = None,
                 only: int | None = None) -> KFoldResult:
    """Finish a kfold run: the same config and folds.csv, training only folds without a complete marker.

    ``test_dir`` overrides the test folder the run was started with (None keeps it). ``only``: train that one
    fold (a job of a scheduler's array); the summary is written once every fold is complete, by whichever call
    completes the last one, or by a plain resume afterwards.
    """
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    if meta.get("command") != "kfold":
        raise RunError(f"{run_dir} is not a kfold run (its meta.json says command {meta.get('command')!r})")
    cfg = build(Config, read_yaml(run_dir / "config.yaml"))
    tracking.prepare(cfg, run_dir.parent.parent)  # the runs folder holding runs/kfold/<run>
    log = log or _quiet
    loaded, _ = train.prepare_data(cfg)
    groups, folds = read_folds(run_dir, loaded)
    plan = FoldPlan(loaded, groups, folds, int(meta["n_folds"]), by=meta.get("by", "stratified"))
    if only is not None and not 1 <= only <= plan.n_folds:
        raise ConfigError(f"--only-fold {only}: {run_dir} has folds 1 to {plan.n_folds}")
    test_dir = test_dir or meta.get("test_dir")
    write_meta(run_dir, status="running", test_dir=str(test_dir) if test_dir else None,
               resumed=[*meta.get("resumed", []), now()])
    with tracking.tracked(cfg, run_dir, "kfold"), run_status(run_dir) as status:
        return _run(cfg, run_dir, plan, test_dir, fold_callbacks, log, status, only)


def _quiet(_: str) -> None:
    pass


def _plan_meta(cfg: Config, plan: FoldPlan) -> dict[str, Any]:
    groups, images = count_groups(plan.groups)
    loaded = plan.loaded
    return dict(arch=cfg.model.arch, class_names=list(loaded.class_names), by=plan.by,
                sources={n: loaded.sources.count(n) for n in loaded.source_names},
                fold_names={str(i): plan.fold_name(i) for i in range(1, plan.n_folds + 1)},
                n_images=len(plan.loaded.paths), skipped=len(plan.loaded.skipped),
                group_duplicates=cfg.data.group_duplicates,
                duplicate_groups=groups, images_in_duplicate_groups=images,
                fold_sizes={str(i): int((plan.folds == i).sum()) for i in range(1, plan.n_folds + 1)},
                grouping=describe(cfg.data, loaded.paths, plan.groups),
                groups_per_fold=sides_summary(plan.groups, {str(i): np.flatnonzero(plan.folds == i)
                                                            for i in range(1, plan.n_folds + 1)}))


def _run(cfg: Config, run_dir: Path, plan: FoldPlan, test_dir, fold_callbacks, log: Log, status: run_status,
         only: int | None = None) -> KFoldResult:
    k = plan.n_folds
    result = KFoldResult(run_dir, k, [], [], len(plan.loaded.paths), multi_member_groups(plan.groups), by=plan.by)
    log(f"{result.n_images} images, {k} folds; {result.duplicate_groups} groups hold more than one image "
        f"(data.group_duplicates: {cfg.data.group_duplicates})"
        + (f"; --by source: each fold holds out one of {', '.join(plan.loaded.source_names)}, and training "
           "images with a copy in the held-out collection are left out of that fold's training"
           if plan.by == "source" else " and never straddle a fold boundary"))
    for i in range(1, k + 1):
        fold_dir = run_dir / f"fold_{i}"
        if fold_complete(fold_dir):
            log(f"fold {i}/{k}: already complete, reused")
            result.reused.append(i)
            continue
        if only is not None and i != only:
            continue  # another job's fold
        callbacks = tuple(fold_callbacks(i, k)) if fold_callbacks else ()
        _warn_untrained_classes(plan, i, log)
        try:
            fit_fold(cfg, run_dir, fold_dir, plan, i, callbacks)
        finally:
            _record_fold_status(run_dir, fold_dir, i)
        result.trained.append(i)
    missing = [i for i in range(1, k + 1) if not fold_complete(run_dir / f"fold_{i}")]
    if missing:  # --only-fold: the summary waits for the other jobs
        log(f"folds still to train: {', '.join(map(str, missing))}; the summary is written when they are complete")
        status.done = "partial"
        write_meta(run_dir, folds_missing=missing)
        return result
    write_meta(run_dir, folds_missing=[])
    result.rows = summarize(cfg, run_dir, plan)
    result.per_source = json.loads((run_dir / "oof_metrics.json").read_text()).get("per_source", {})
    if test_dir:
        log(f"scoring the {k} fold models and their ensemble on {test_dir}")
        test_rows, result.test_in_train = evaluate_test(cfg, run_dir, plan, test_dir)
        result.rows += test_rows
    write_summary(run_dir, result, cfg)
    return result


def fit_fold(cfg: Config, run_dir: Path, fold_dir: Path, plan: FoldPlan, fold: int,
             callbacks: tuple = ()) -> None:
    """One fold as a complete train run in ``fold_dir``: train on the other folds, score on this one.

    The held-out fold never steers training: when the recipe picks a best epoch, lowers the rate on plateaus or
    stops early, a grouped inner split (``data.val_split`` of the training part) does that instead.
    """
    if fold_dir.exists():  # left by a failed or interrupted attempt: start the fold afresh
        shutil.rmtree(fold_dir)
    fold_dir.mkdir(parents=True)
    train_idx, held_out = training_side(plan, fold)
    copies = int((plan.folds != fold).sum() - len(train_idx))
    tune_idx = None
    if train.validation_steers(cfg):
        inner_fit, inner_tune = split_train_val(plan.loaded.labels[train_idx], plan.groups[train_idx],
                                                cfg.data.val_split, cfg.seed, plan.loaded.class_names)
        train_idx, tune_idx = train_idx[inner_fit], train_idx[inner_tune]
    start_run(fold_dir, cfg, "train", kfold_run=str(run_dir), fold=fold, n_folds=plan.n_folds,
              held_out=plan.fold_name(fold), copies_of_held_out_left_out=copies)
    with tracking.tracked(cfg, fold_dir, "train") as tracked_callbacks, run_status(fold_dir):
        train.write_split(fold_dir, plan.loaded, train_idx, held_out, tune_idx, groups=plan.groups)
        write_meta(fold_dir, n_images=len(plan.loaded.paths), duplicate_groups=multi_member_groups(plan.groups),
                   n_tune=None if tune_idx is None else int(len(tune_idx)))
        parts = train.FitParts(train_idx, held_out if tune_idx is None else tune_idx, score=held_out,
                               scored_on="held-out fold", groups=plan.groups)
        train.fit_and_report(cfg, fold_dir, plan.loaded, parts, callbacks + tracked_callbacks)


def _warn_untrained_classes(plan: FoldPlan, fold: int, log: Log) -> None:
    """Say when a fold's training side has no image of a class (--by source: a collection that holds a class
    alone): that fold's model can never predict it, and its recall on the held-out collection is 0."""
    train_idx, _ = training_side(plan, fold)
    names = plan.loaded.class_names
    absent = [names[c] for c in range(len(names)) if not (plan.loaded.labels[train_idx] == c).any()]
    if absent:
        log(f"fold {plan.fold_name(fold)}: no training image of class {', '.join(absent)}; this fold's model "
            "cannot predict it")


def _record_fold_status(run_dir: Path, fold_dir: Path, fold: int) -> None:
    try:
        status = read_meta(fold_dir).get("status", "unknown")
    except RunError:
        status = "failed"
    statuses = dict(read_meta(run_dir).get("fold_status", {}))
    statuses[str(fold)] = status
    write_meta(run_dir, fold_status=statuses)


# --- summaries -------------------------------------------------------------------------------------------

def _row(model: str, data: str, m: dict[str, Any]) -> dict[str, Any]:
    lo, hi = m.get("accuracy_ci95", (float("nan"), float("nan")))
    return {"model": model, "data": data, "n": m.get("n"), **{k: m[k] for k in METRICS},
            "accuracy_ci_low": lo, "accuracy_ci_high": hi,
            "accuracy_ci_resampling": (m.get("interval") or {}).get("text", "resampling images")}


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


def summarize(cfg: Config, run_dir: Path, plan: FoldPlan) -> list[dict[str, Any]]:
    """Per-fold validation rows read back from the fold directories, their mean and std, and pooled OOF.

    Writes oof_predictions.csv, oof_metrics.json and the OOF confusion matrices and per-fold accuracy plot.
    """
    k, names = plan.n_folds, plan.loaded.class_names
    fold_rows = []
    for i in range(1, k + 1):
        m = json.loads((run_dir / f"fold_{i}" / "metrics.json").read_text())
        fold_rows.append(_row(plan.fold_name(i), "val", m))
    probs = read_oof(run_dir, plan)
    pooled = compute_metrics(plan.loaded.labels, probs, names, cfg.eval.bootstrap, cfg.seed, plan.groups,
                             unit_name(cfg.data))
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
    return [*fold_rows, *_mean_std_rows(fold_rows, "val"), _row("pooled_oof", "val", pooled)]


def add_tumour_or_not(pooled: dict[str, Any], cfg: Config, plan: FoldPlan, probs: np.ndarray) -> None:
    """oof_metrics.json's tumour-or-not figures (tumour = any class but notumor), pooled and per collection, with
    intervals resampling the fold plan's groups (a model without a notumor class: nothing)."""
    loaded = plan.loaded
    truth = truth_of_classes(loaded.labels, loaded.class_names)
    if truth is None:
        return
    unit, args = unit_name(cfg.data), (cfg.eval.bootstrap, cfg.seed)
    pooled["binary"] = binary_from_probs(truth, probs, loaded.class_names, None, plan.groups, unit, *args)
    if len(loaded.source_names) > 1:
        pooled["binary_per_source"] = binary_per_source(truth, probs, loaded.class_names, loaded.sources, None,
                                                        plan.groups, unit, *args)


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


def evaluate_test(cfg: Config, run_dir: Path, plan: FoldPlan,
                  test_dir: str | Path) -> tuple[list[dict[str, Any]], int]:
    """Score every fold model and the ensemble (mean probabilities) on a test folder decoded once.

    Returns the test rows and how many test images have a pixel-identical copy in the training folder.
    """
    names = plan.loaded.class_names
    listing = list_images(test_dir, cfg.data.classes, require_all=False, scan=ScanOptions.from_config(cfg.data))
    if tuple(listing.class_names) != tuple(names):
        raise DataError(f"{test_dir} classes {listing.class_names} differ from the training classes {names}")
    test = load_images(listing, ImageSpec.of(cfg.data))
    test_groups, found = split_groups(cfg.data, test, strict=False)  # the unit the test intervals resample
    seen = set(plan.loaded.digests)
    in_train = sum(d in seen for d in test.digests)
    rows, all_probs = [], []
    for i in range(1, plan.n_folds + 1):
        fold_dir = run_dir / f"fold_{i}"
        model = keras.models.load_model(fold_dir / "model.keras", safe_mode=True)
        raw = predict(model, test.images, cfg.train.batch_size, cfg.eval.tta)
        all_probs.append(raw)
        probs = scale(raw, stored_temperature(fold_dir))
        m = compute_metrics(test.labels, probs, names, cfg.eval.bootstrap, cfg.seed, test_groups,
                            unit_of(found))
        _write_test(fold_dir / "test", m, test, probs, f"fold {i} model on {test_dir}")
        rows.append(_row(plan.fold_name(i), "test", m))
        del model
        keras.backend.clear_session()
    ensemble = scale(np.mean(all_probs, axis=0), stored_temperature(run_dir))  # as evaluate and serve see it
    m = compute_metrics(test.labels, ensemble, names, cfg.eval.bootstrap, cfg.seed, test_groups,
                        unit_of(found))
    _write_test(run_dir / "ensemble_test", m, test, ensemble,
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


def write_summary(run_dir: Path, result: KFoldResult, cfg: Config) -> None:
    """summary.csv (full precision, one row per fold, mean, std, pooled OOF, test rows), summary.json (the same
    rows, structured, for ``compare``) and summary.md."""
    write_csv(run_dir / "summary.csv", SUMMARY_COLUMNS, ([_cell(r[c]) for c in SUMMARY_COLUMNS] for r in result.rows))
    atomic_write_json(run_dir / "summary.json", summary_json(result))
    atomic_write_text(run_dir / "summary.md", summary_markdown(run_dir, result, cfg))


def summary_json(result: KFoldResult) -> dict[str, Any]:
    """summary.json: per data part (``val``: held-out folds, ``test``: the test folder), each model row by name
    (fold_1 ... fold_k, mean, std, pooled_oof or ensemble) with its metrics; NaN is written as null."""
    parts: dict[str, dict[str, Any]] = {}
    for r in result.rows:
        parts.setdefault(r["data"], {})[r["model"]] = {c: _json_number(r[c]) for c in SUMMARY_COLUMNS[2:]}
    return {"n_folds": result.n_folds, "n_images": result.n_images, "duplicate_groups": result.duplicate_groups,
            "by": result.by, "metrics": list(METRICS), "test_images_in_training_folder": result.test_in_train,
            **parts, "per_source": result.per_source}


def _json_number(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _cell(v: Any) -> Any:
    """Floats at full precision (repr), so summary.csv reproduces the fold numbers exactly."""
    return "" if v is None else repr(float(v)) if isinstance(v, float) else v


def summary_markdown(run_dir: Path, result: KFoldResult, cfg: Config) -> str:
    meta = read_meta(run_dir)
    loco = result.by == "source"
    sources = meta.get("sources", {})
    folds_line = (
        f"- folds: leave one collection out (`--by source`): each fold trains on all collections but one and is "
        f"scored on the one left out; a training image with a copy in the held-out collection (duplicate groups, "
        f"`data.group_duplicates: {cfg.data.group_duplicates}`) is left out of that fold's training"
        if loco else
        f"- folds: scikit-learn StratifiedGroupKFold (shuffled, seed {cfg.seed}) over duplicate groups "
        f"(`data.group_duplicates: {cfg.data.group_duplicates}`): {result.duplicate_groups} groups hold more "
        f"than one image ({meta.get('images_in_duplicate_groups', '?')} images); each group sits in one fold")
    lines = [
        f"# {'Leave-one-collection-out' if loco else f'{result.n_folds}-fold'} cross-validation: "
        f"{cfg.model.arch}", "",
        f"- data: {', '.join(f'`{p}`' for p in cfg.data_paths)}, {result.n_images} images, "
        f"classes {', '.join(meta.get('class_names', []))}"
        + (f"; collections {', '.join(f'{n} ({c})' for n, c in sources.items())}" if len(sources) > 1 else ""),
        folds_line, *_groups_line(meta),
        f"- every fold: a fresh model trained as `train` trains ({_recipe(cfg)}), scored on the held-out fold",
        "- the held-out fold never steers training: " + (
            f"an inner split ({cfg.data.val_split:g} of each fold's training part, duplicate groups kept "
            "together) picks the best epoch, lowers the rate and stops early, so the folds train on fewer images"
            if train.validation_steers(cfg) else
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
                  *per_source_markdown(result.per_source, list(meta.get("class_names", [])))]
    oof = run_dir / "oof_metrics.json"
    binary = json.loads(oof.read_text()).get("binary") if oof.is_file() else None
    if binary:
        lines += ["", "## Tumour or not", "", "The pooled out-of-fold answers read as tumour (any class but notumor) "
                  "or not; missed tumours counts every answer as accepted (the folds' gates are not pooled).",
                  *binary_markdown(binary, json.loads(oof.read_text()).get("binary_per_source"))]
    calibration = run_dir / "calibration.json"
    if loco and cfg.eval.calibrate:
        lines += ["", "## Calibration", "", "No temperature is fitted for the ensemble of a leave-one-collection-out "
                  "run: each collection's predictions come from a model that never saw it, so a temperature fitted on "
                  "them describes the transfer and does not carry from one collection to the next. Calibrate the "
                  "model you deploy on scans of the site it serves."]
    elif calibration.is_file():
        c = json.loads(calibration.read_text())
        lines += ["", "## Calibration", "",
                  f"Temperature {c['temperature']:.3f} fitted on the {c['fitted_on']}, used by the ensemble; ECE "
                  f"over {c['ece_bins']} equal-width bins, 'after' {c['after_is']}.", "",
                  *markdown_table(["", "ECE", "Brier", "NLL"],
                                  [[w, f"{c[w]['ece']:.4f}", f"{c[w]['brier']:.4f}", f"{c[w]['nll']:.4f}"]
                                   for w in ("before", "after")])]
    test = [r for r in result.rows if r["data"] == "test"]
    if test:
        lines += ["", f"## Test folder `{meta.get('test_dir')}`", "",
                  "Each fold model, their mean and std, and the ensemble (the mean of the fold models' "
                  "probabilities).",
                  f"Test images with a pixel-identical copy in the training folder: {result.test_in_train} "
                  "(they are scored as well; their scores are not independent of training).", "",
                  *_table(test)]
    return "\n".join(lines) + "\n"


def _groups_line(meta: dict[str, Any]) -> list[str]:
    """The grouping (data.groups patients joined with duplicates and volumes) and the groups in each fold."""
    g, per = meta.get("grouping") or {}, meta.get("groups_per_fold") or {}
    if not g:
        return []
    who = (f"{g['patients']} patients from `data.groups: {g['spec']}` ({g['unmatched']} images named by no row "
           "or match stay alone), joined with duplicate and volume groups" if "patients" in g
           else "duplicate and volume groups")
    shared = sum(v["shared"] for v in per.values())
    return [f"- groups: {g['groups']} {who}; groups per fold "
            + ", ".join(f"{k}: {v['groups']} ({v['images']} images)" for k, v in per.items())
            + f"; groups also found in another fold, summed over folds: {shared}"
            + (" (only --by source can leave any: a copy published in two collections)" if shared else "")]


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


def resume_config(run_dir: str | Path, folds: int | None = None) -> Config:
    """The run's saved config, after checking --folds (if given) matches the folds it was started with."""
    run_dir = Path(run_dir)
    saved = read_meta(run_dir).get("n_folds")
    if folds is not None and folds != saved:
        raise ConfigError(f"--folds {folds}: {run_dir} was started with {saved} folds and resumes with them; "
                          "drop --folds or start a new run")
    return build(Config, read_yaml(run_dir / "config.yaml"))
