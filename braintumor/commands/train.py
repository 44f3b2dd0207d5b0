"""The ``train`` command: decode, split, and fit one model into a new run directory (``engine.trainer``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import guidance, tracking
from ..config import Config
from ..dedup import multi_member_groups
from ..distribute import runs_dir_for_this_worker
from ..engine.run import Run
from ..engine.trainer import FitParts, fit_and_report
from ..groups import describe, sides_summary
from ..models import get_spec
from ..progress import Reporter, or_silent
from ..runs import write_meta, write_skipped
from ..splits import prepare_grouped, split_like, split_train_val, write_split


def split(cfg: Config, loaded, groups) -> tuple[Any, Any, dict[str, Any]]:
    """The validation split: seeded and stratified, or (``data.split_from``) a previous run's, extended."""
    if cfg.data.split_from is None:
        return (*split_train_val(loaded.labels, groups, cfg.data.val_split, cfg.seed, loaded.class_names,
                                 loaded.sources), {})
    train_idx, val_idx, counts = split_like(cfg.data.split_from, loaded.paths, loaded.labels, groups,
                                            cfg.data.val_split, cfg.seed, loaded.sources)
    return train_idx, val_idx, {"split_from": {"run": cfg.data.split_from, **counts}}


def run_train(cfg: Config, callbacks: tuple = (), reporter: Reporter | None = None) -> tuple[Path, dict[str, Any]]:
    """The ``train`` command: a new run directory with the best model and its validation metrics.
    ``reporter.log`` hears the grouping's warnings (a chained duplicate group, copies across patients)."""
    get_spec(cfg.model.arch)  # fail on a bad architecture before any work
    guidance.check(cfg)
    runs_dir = runs_dir_for_this_worker(cfg)
    tracking.prepare(cfg, runs_dir)  # a tracker's missing package fails here, before the run directory
    run = Run.create(runs_dir, "train", cfg.model.arch, cfg.name, cfg=cfg)
    run_dir = run.path
    with tracking.tracked(cfg, run_dir, "train") as tracked_callbacks, run.marking():
        loaded, made = prepare_grouped(cfg)
        groups, grouping = made.groups, describe(cfg.data, loaded.paths, made.groups, made)
        for warning in grouping["warnings"]:
            or_silent(reporter).log(f"warning: {warning}")
        write_skipped(run_dir, loaded.skipped)
        train_idx, val_idx, reuse = split(cfg, loaded, groups)
        write_split(run_dir, loaded, train_idx, val_idx, groups=groups)
        write_meta(run_dir, n_images=len(loaded.paths), skipped=len(loaded.skipped),
                   duplicate_groups=multi_member_groups(groups), grouping=grouping, **reuse,
                   groups_per_side=sides_summary(groups, {"train": train_idx, "val": val_idx}))
        metrics = fit_and_report(cfg, run_dir, loaded, FitParts(train_idx, val_idx, groups=groups),
                                 callbacks + tracked_callbacks)
    return run_dir, metrics
