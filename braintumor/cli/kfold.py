"""`braintumor kfold`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..config import DEFAULT_FOLDS
from ..errors import ConfigError
from .app import command
from .common import (
    TrainOptions,
    console,
    epochs_text,
    per_source_table,
    print_run_dir,
    print_tracking,
    train_options,
)
from .progress import RichReporter, keras_progress, make_progress

Folds = Annotated[int | None, typer.Option(
    "--folds", "-k", help=f"Number of folds (default {DEFAULT_FOLDS}): 2 up to the smallest class's "
    "number of distinct images.")]
Test = Annotated[Path | None, typer.Option(
    "--test", help="Folder of class sub-folders on which every fold model and their ensemble are scored.")]
Resume = Annotated[Path | None, typer.Option(
    "--resume", help="A kfold run directory to finish: trains only its folds without a complete marker, with "
    "its saved config.yaml and folds.csv.")]
PlanOnly = Annotated[bool, typer.Option(
    "--plan-only", help="Create the run directory and its folds.csv, train nothing: then train each fold as its "
    "own job with --resume RUN --only-fold I (a scheduler's job array).")]
By = Annotated[str, typer.Option(
    "--by", help="stratified: seeded folds stratified by class; source: leave one collection out (one fold per "
    "--data folder, each held out in turn: how a model transfers to a new hospital).")]
OnlyFold = Annotated[int | None, typer.Option(
    "--only-fold", help="With --resume: train this one fold (1..k). The summary is written once every fold is "
    "complete; a last plain --resume assembles it if the jobs finished together.")]


@command("kfold")
@train_options
def kfold(opts: TrainOptions, folds: Folds = None, test: Test = None, resume: Resume = None,
          plan_only: PlanOnly = False, only_fold: OnlyFold = None, by: By = "stratified") -> None:
    """Stratified group k-fold cross-validation into runs/kfold/<timestamp>-<arch>/, one train run per fold.

    Copies of one image (identical pixels; also perceptual neighbours with --set data.group_duplicates=near)
    always sit in the same fold. Example: braintumor kfold --arch customnet --folds 5 --data data/Training.
    Leave one collection out: braintumor kfold --by source --data kaggle=data/Training --data hospital=data/B
    """
    from ..commands.kfold import resume_config, resume_kfold, run_kfold  # lazy: loads TensorFlow; --help stays fast

    if only_fold is not None and resume is None:
        raise ConfigError("--only-fold trains one fold of an existing plan: create it with --plan-only, then pass "
                          "--resume RUN --only-fold I")
    if plan_only and resume is not None:
        raise ConfigError("--plan-only starts a new kfold run; drop --resume")
    if resume is not None:
        given = opts.given()
        if given:
            raise ConfigError(f"--resume reuses the run's own config.yaml and folds.csv; "
                              f"drop {', '.join(given)}")
        if by != "stratified":
            raise ConfigError("--resume reuses the run's own folds; drop --by")
        cfg = resume_config(resume, folds)
        console.print(f"resuming {resume}", highlight=False)
        with _FoldProgress(cfg.train.epochs) as progress:
            result = resume_kfold(resume, test, fold_callbacks=progress.callbacks,
                                  reporter=RichReporter(progress.progress), only=only_fold)
    else:
        cfg = opts.resolve()
        what = "leave-one-collection-out" if by == "source" else \
            f"{DEFAULT_FOLDS if folds is None else folds}-fold"
        console.print(f"{what} cross-validation of [bold]{cfg.model.arch}[/] on {', '.join(cfg.data_paths)} at "
                      f"{cfg.data.image_size}px, {epochs_text(cfg)} per fold", highlight=False)
        with _FoldProgress(cfg.train.epochs) as progress:
            result = run_kfold(cfg, folds, test, fold_callbacks=progress.callbacks,
                               reporter=RichReporter(progress.progress), plan_only=plan_only, by=by)
    if not result.rows:  # --plan-only, or --only-fold while other folds are still to train
        done = f"trained fold {', '.join(map(str, result.trained))}; " if result.trained else ""
        console.print(f"{done}the summary is written once all {result.n_folds} folds are complete: "
                      f"braintumor kfold --resume {result.run_dir} [--only-fold I]", highlight=False)
        print_tracking(cfg, result.run_dir)
        print_run_dir(result.run_dir)
        return
    console.print(summary_table(result.rows, "leave-one-collection-out cross-validation" if result.by == "source"
                                else f"{result.n_folds}-fold cross-validation"))
    if len(result.per_source) > 1:
        console.print(per_source_table(result.per_source, "per source (out-of-fold)"))
    _print_notes(result)
    print_tracking(cfg, result.run_dir)
    print_run_dir(result.run_dir)


def _print_notes(result) -> None:
    """The lines under the tables: duplicate groups, a suggested operating point, reused folds."""
    line = f"{result.duplicate_groups} duplicate groups (more than one image each), " + (
        "copies of a held-out collection's images left out of that fold's training" if result.by == "source"
        else "each kept inside one fold")
    if result.test_in_train:
        line += f"; {result.test_in_train} test image(s) have an identical copy in the training folder"
    console.print(line, highlight=False)
    doubt = {s: p["suggested"] for s, p in (result.binary.get("notumor_doubt") or {}).items()
             if p["suggested"] is not None}
    if doubt:
        console.print("a site's operating point (summary.md): --notumor-doubt "
                      + ", ".join(f"{t:.4g} for {s}" for s, t in doubt.items()), highlight=False, soft_wrap=True)
    if result.reused:
        console.print(f"reused complete folds: {', '.join(map(str, result.reused))}; "
                      f"trained now: {', '.join(map(str, result.trained)) or 'none'}", highlight=False)


class _FoldProgress:
    """Rich progress for a kfold run: a fold i/k bar, and epoch and batch bars for the fold being trained."""

    def __init__(self, epochs: int):
        self.progress = make_progress()
        self.epochs = epochs
        self._fold_task = None
        self._previous = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self._finish_previous()
        if self._fold_task is not None and exc[0] is None:
            self.progress.update(self._fold_task, completed=self._k, description="folds")
        return self.progress.__exit__(*exc)

    def callbacks(self, fold: int, k: int) -> tuple:
        """Called by the library before each fold it trains (folds it reuses are skipped)."""

        if self._fold_task is None:
            self._fold_task, self._k = self.progress.add_task("folds", total=k), k
        self._finish_previous()
        self.progress.update(self._fold_task, completed=fold - 1, description=f"fold {fold}/{k}")
        self._previous = keras_progress(self.progress, self.epochs, label=f"fold {fold}/{k} ")
        return (self._previous,)

    def _finish_previous(self) -> None:
        """Hide the finished fold's batch bar; its epoch line stays as a record of how it ended."""
        cb = self._previous
        if cb is not None and hasattr(cb, "batch_task"):  # hidden, not removed: keras_progress indexes tasks
            self.progress.update(cb.batch_task, visible=False)
        self._previous = None


def summary_table(rows: list[dict], title: str) -> Table:
    """Rich table of summary rows: per fold, mean, std, pooled OOF, then the test rows."""
    t = Table(title=title, show_header=True, header_style="bold")
    for col in ("model", "data", "n", "loss", "accuracy", "95% CI", "AUC", "macro F1"):
        t.add_column(col, justify="left" if col in ("model", "data") else "right")
    for r in rows:
        lo, hi = r["accuracy_ci_low"], r["accuracy_ci_high"]
        unit = r.get("accuracy_ci_resampling")
        ci = "" if lo != lo else f"{lo:.3f}-{hi:.3f}" + (f"\n{unit}" if unit else "")  # NaN for mean/std rows
        t.add_row(r["model"], r["data"], "" if r["n"] is None else str(r["n"]), f"{r['loss']:.4f}",
                  f"{r['accuracy']:.4f}", ci, f"{r['auc']:.4f}", f"{r['macro_f1']:.4f}",
                  style="bold" if r["model"] in ("mean", "ensemble") else None)
    return t
