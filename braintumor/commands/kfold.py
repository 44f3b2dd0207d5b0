"""The ``kfold`` command: stratified group k-fold cross-validation (or one fold per collection), each fold a
complete train run by ``engine.trainer``, resumable fold by fold; ``engine.crossval`` writes the summaries."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import guidance, models, tracking  # noqa: F401  (models registers the custom layers)
from ..config import Config, build, read_yaml
from ..dedup import count_groups, multi_member_groups
from ..distribute import runs_dir_for_this_worker
from ..engine import trainer
from ..engine.crossval import KFoldResult, evaluate_test, groups_per_fold, summarize, write_summary
from ..engine.run import Run
from ..engine.trainer import validation_steers
from ..errors import ConfigError, RunError
from ..groups import describe
from ..models import get_spec
from ..progress import Reporter, or_silent
from ..runs import fold_complete, now, read_meta, run_status, write_meta, write_skipped
from ..splits import (
    FoldPlan,
    plan_folds,
    prepare_data,
    read_folds,
    split_train_val,
    training_side,
    write_folds,
    write_split,
)

__all__ = ["FoldPlan", "KFoldResult", "plan_folds", "resume_config", "resume_kfold", "run_kfold"]

# (fold 1..k, k) -> the Keras callbacks for that fold's fit (the CLI's progress display)
FoldCallbacks = Callable[[int, int], Sequence[Any]]
Log = Callable[[str], None]


def run_kfold(cfg: Config, n_folds: int | None, test_dir: str | Path | None = None,
              fold_callbacks: FoldCallbacks | None = None, reporter: Reporter | None = None,
              plan_only: bool = False, by: str = "stratified") -> KFoldResult:
    """The ``kfold`` command: a new runs/kfold/<run>/ with one complete train run per fold and the summaries.

    1. decode, group duplicates and assign folds (a bad --folds fails here, before any run directory exists)
    2. write config.yaml, meta.json and folds.csv (``plan_only``: stop here, status ``planned``, so separate
       jobs can each train one fold with ``resume_kfold(run, only=i)``)
    3. fit each fold with trainer.fit_and_report, then summarise (and score the test folder)

    ``n_folds`` None: 5, or with ``by="source"`` (leave one collection out) one fold per collection.
    ``reporter.log`` hears what the run is doing; ``fold_callbacks`` adds Keras callbacks to each fold's fit.
    """
    get_spec(cfg.model.arch)  # fail on a bad architecture before decoding anything
    guidance.check(cfg)
    runs_dir = runs_dir_for_this_worker(cfg)
    tracking.prepare(cfg, runs_dir)  # and on a tracker's missing package
    log = or_silent(reporter).log
    plan = plan_folds(cfg, n_folds, by)
    n_folds = plan.n_folds
    for warning in plan.grouping.warnings(plan.loaded.paths):
        log(f"warning: {warning}")
    if cfg.data.split_from is not None:
        log(f"warning: data.split_from ({cfg.data.split_from}) is for train's validation split; kfold draws its own "
            "folds (seeded, groups whole)")

    run = Run.create(runs_dir, "kfold", cfg.model.arch, cfg.name, cfg=cfg, n_folds=n_folds,
                     test_dir=str(test_dir) if test_dir else None, by=plan.by)
    run_dir = run.path
    with tracking.tracked(cfg, run_dir, "kfold"), run.marking() as status:
        write_folds(run_dir, plan)
        write_skipped(run_dir, plan.loaded.skipped)
        write_meta(run_dir, **_plan_meta(cfg, plan))
        if plan_only:
            status.done = "planned"
            return KFoldResult(run_dir, n_folds, [], [], len(plan.loaded.paths), multi_member_groups(plan.groups))
        return _run(cfg, run_dir, plan, test_dir, fold_callbacks, log, status)


def resume_kfold(run_dir: str | Path, test_dir: str | Path | None = None,
                 fold_callbacks: FoldCallbacks | None = None, reporter: Reporter | None = None,
                 only: int | None = None) -> KFoldResult:
    """Finish a kfold run: the same config and folds.csv, training only folds without a complete marker.

    ``test_dir`` overrides the test folder the run was started with (None keeps it). ``only``: train that one
    fold (a job of a scheduler's array); the summary is written once every fold is complete, by whichever call
    completes the last one, or by a plain resume afterwards.
    """
    run = Run.open(run_dir)
    run_dir, meta = run.path, run.meta
    if run.info.command != "kfold":
        raise RunError(f"{run_dir} is not a kfold run (its meta.json says command {meta.get('command')!r})")
    cfg = build(Config, read_yaml(run_dir / "config.yaml"))
    tracking.prepare(cfg, run_dir.parent.parent)  # the runs folder holding runs/kfold/<run>
    log = or_silent(reporter).log
    loaded, _ = prepare_data(cfg)
    groups, folds = read_folds(run_dir, loaded)
    plan = FoldPlan(loaded, groups, folds, int(meta["n_folds"]), by=meta.get("by", "stratified"))
    if only is not None and not 1 <= only <= plan.n_folds:
        raise ConfigError(f"--only-fold {only}: {run_dir} has folds 1 to {plan.n_folds}")
    test_dir = test_dir or meta.get("test_dir")
    write_meta(run_dir, status="running", test_dir=str(test_dir) if test_dir else None,
               resumed=[*meta.get("resumed", []), now()])
    with tracking.tracked(cfg, run_dir, "kfold"), run.marking() as status:
        return _run(cfg, run_dir, plan, test_dir, fold_callbacks, log, status, only)


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
                grouping=describe(cfg.data, loaded.paths, plan.groups, plan.grouping),
                groups_per_fold=groups_per_fold(plan))


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
    result.rows, pooled = summarize(cfg, run_dir, plan)
    result.per_source, result.calibration = pooled.get("per_source", {}), pooled.get("calibration")
    result.binary = {k: pooled[k] for k in ("binary", "binary_per_source", "notumor_doubt")
                     if k in pooled}
    if test_dir:
        log(f"scoring the {k} fold models and their ensemble on {test_dir}")
        result.test_dir = str(test_dir)
        temperature = (result.calibration or {}).get("temperature", 1.0)
        test_rows, result.test_in_train = evaluate_test(cfg, run_dir, plan, test_dir, temperature)
        result.rows += test_rows
    write_summary(run_dir, result, cfg, plan)
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
    if validation_steers(cfg):
        sources = [plan.loaded.sources[i] for i in train_idx] if plan.loaded.sources else None
        inner_fit, inner_tune = split_train_val(plan.loaded.labels[train_idx], plan.groups[train_idx],
                                                cfg.data.val_split, cfg.seed, plan.loaded.class_names, sources)
        train_idx, tune_idx = train_idx[inner_fit], train_idx[inner_tune]
    fold_run = Run(fold_dir)
    fold_run.start("train", cfg, kfold_run=str(run_dir), fold=fold, n_folds=plan.n_folds,
                   held_out=plan.fold_name(fold), copies_of_held_out_left_out=copies)
    with tracking.tracked(cfg, fold_dir, "train") as tracked_callbacks, fold_run.marking():
        write_split(fold_dir, plan.loaded, train_idx, held_out, tune_idx, groups=plan.groups)
        write_meta(fold_dir, n_images=len(plan.loaded.paths), duplicate_groups=multi_member_groups(plan.groups),
                   n_tune=None if tune_idx is None else int(len(tune_idx)))
        parts = trainer.FitParts(train_idx, held_out if tune_idx is None else tune_idx, score=held_out,
                                 scored_on="held-out fold", groups=plan.groups)
        trainer.fit_and_report(cfg, fold_dir, plan.loaded, parts, callbacks + tracked_callbacks)


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


def resume_config(run_dir: str | Path, folds: int | None = None) -> Config:
    """The run's saved config, after checking --folds (if given) matches the folds it was started with."""
    run_dir = Path(run_dir)
    saved = read_meta(run_dir).get("n_folds")
    if folds is not None and folds != saved:
        raise ConfigError(f"--folds {folds}: {run_dir} was started with {saved} folds and resumes with them; "
                          "drop --folds or start a new run")
    return build(Config, read_yaml(run_dir / "config.yaml"))
