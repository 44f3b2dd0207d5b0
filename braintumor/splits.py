"""Which images train and which are held out: decoding with duplicate groups, the validation split, and k-fold
planning (seeded stratified group folds, or one fold per collection), with folds.csv for resuming.

A duplicate group (copies of one image, and the slices of one scanner volume) is the unit no split ever cuts.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .config import DEFAULT_FOLDS, Config
from .data import ImageSpec, LoadedImages, list_images, load_images
from .errors import ConfigError, DataError, RunError
from .groups import Grouping, grouping
from .runs import write_csv
from .scanners import ScanOptions


def prepare_data(cfg: Config) -> tuple[LoadedImages, np.ndarray]:
    """Decode the configured folder(s) once and group duplicate images (the unit that splits never cut), across
    folders too: a copy of one image in two collections is one group."""
    loaded, made = prepare_grouped(cfg)
    return loaded, made.groups


def prepare_grouped(cfg: Config) -> tuple[LoadedImages, Grouping]:
    """prepare_data with the whole Grouping (its warnings and largest group, for the terminal and meta.json)."""
    if not cfg.data_paths:
        raise ConfigError("no data folder: pass --data DIR (a folder with one sub-folder per class)")
    listing = list_images(cfg.data_paths, cfg.data.classes, scan_options=ScanOptions.from_config(cfg.data))
    loaded = load_images(listing, ImageSpec.of(cfg.data))
    # the slices of one scanner volume (NIfTI, multi-frame DICOM, DICOM series) and of one patient (data.groups)
    # stay together too
    return loaded, grouping(cfg.data, loaded)


def strata(labels: np.ndarray, sources: Sequence[str] | None, n_splits: int) -> np.ndarray:
    """What a split stratifies by: collection x class when there are several collections (so each collection's
    classes are held out in proportion, not only the pooled classes), else the class alone. Falls back to the
    class when no collection x class cell could appear in every split (scikit-learn would refuse)."""
    labels = np.asarray(labels)
    if sources is None or len(set(sources)) < 2:
        return labels
    codes = np.unique(np.asarray(sources, dtype=object).astype(str), return_inverse=True)[1].ravel()
    cells = codes * (int(labels.max(initial=0)) + 1) + labels
    return cells if np.bincount(cells).max() >= n_splits else labels


def split_train_val(labels: np.ndarray, groups: np.ndarray, val_split: float, seed: int,
                    class_names: Sequence[str] = (), sources: Sequence[str] | None = None):
    """Stratified train/validation indices that never put two copies of one image on both sides.

    ``class_names`` (index order) lets an error name a class that has no images. ``sources`` (the collection of
    each image) stratifies by collection x class (strata); without it, or with one collection, by class.
    """
    n_splits = max(2, round(1 / val_split))
    names = list(class_names) or [f"class {i}" for i in range(int(labels.max(initial=-1)) + 1)]
    counts = np.bincount(labels, minlength=len(names))
    need = (f"each class needs at least {n_splits} images for a validation split of {val_split:g} "
            f"(data.val_split holds out 1 image in {n_splits})")
    empty = [names[i] for i, c in enumerate(counts) if c == 0]
    if empty and len(labels):
        raise DataError(f"class {', '.join(map(repr, empty))} has no readable images: add images to its folder "
                        f"or leave the class out of data.classes; {need}")
    small = [i for i, c in enumerate(counts) if 0 < c < 2]
    if small or len(labels) < n_splits:
        raise DataError("each class needs at least 2 readable images to make a validation split")
    if (counts < n_splits).all():  # scikit-learn refuses: no class could appear in every split
        fewest = int(counts.argmin())
        raise DataError(f"too few images: class {names[fewest]!r} has {int(counts[fewest])} and no class has "
                        f"{n_splits}; {need}, or raise data.val_split")
    train_idx, val_idx = held_out(strata(labels, sources, n_splits), groups, n_splits, seed)
    return np.sort(train_idx), np.sort(val_idx)


def held_out(cells: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The first of ``n_splits`` seeded stratified group folds (stratified by ``cells``): train and held-out indices."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only N members"
        return next(splitter.split(np.zeros(len(cells)), cells, groups))


def previous_sides(split_from: str | Path) -> dict[str, str]:
    """path -> "train" / "val" from a train run's split.csv (``split_from``: the run directory or the file)."""
    path = Path(split_from)
    path = path / "split.csv" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"data.split_from: {path} not found: give a train run's directory or its split.csv")
    table = pd.read_csv(path)
    if not {"path", "split"} <= set(table.columns) or not set(table["split"]) <= {"train", "val"}:
        raise ConfigError(f"data.split_from: {path} is not a train run's split.csv (path and split columns, "
                          "sides train and val); a kfold run's split cannot be reused")
    return {str(Path(p).resolve()): str(s) for p, s in zip(table["path"].astype(str), table["split"])}


def split_like(split_from: str | Path, paths: Sequence[str], labels: np.ndarray, groups: np.ndarray,
               val_split: float, seed: int, sources: Sequence[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Train/validation indices that keep every image a previous train run listed on the side it had there, so
    a lever that adds images (a collection, synthetic slices) is judged on its control's validation images.
    An image it does not list joins its group's side when the group has a listed image; the others are held
    out as split_train_val holds out (``val_split``, seeded, stratified, groups whole) among themselves.
    Returns the indices and counts (reused, joined, new) for meta.json."""
    before = previous_sides(split_from)
    side = np.array([before.get(str(Path(p).resolve()), "") for p in paths], dtype=object)
    reused = int((side != "").sum())
    if not reused:
        raise DataError(f"data.split_from: none of the {len(paths)} images is listed in {split_from}: it splits "
                        "other data (paths are matched as absolute paths)")
    listed = side != ""
    per_group = pd.Series(side[listed]).groupby(groups[listed])
    straddling = per_group.nunique() > 1
    if straddling.any():
        example = paths[int(np.flatnonzero(groups == straddling.index[straddling][0])[0])]
        raise DataError(f"data.split_from: images grouped together here (a patient, a volume or copies) were on "
                        f"both sides in {split_from}, e.g. {example}; the grouping changed since (data.groups, "
                        "data.group_duplicates, or pixels read otherwise: data.normalize, data.crop): drop "
                        "data.split_from, or, when this run adds no images, set data.group_duplicates: none to keep "
                        "the control's sides as they were")
    group_side = per_group.first()
    follow = ~listed & np.isin(groups, group_side.index)
    side[follow] = group_side.reindex(groups[follow]).to_numpy()
    new = np.flatnonzero(side == "")
    n_splits = max(2, round(1 / val_split))
    if len(np.unique(groups[new])) >= n_splits:
        cells = strata(labels[new], None if sources is None else [sources[i] for i in new], n_splits)
        if np.bincount(cells).max() < n_splits:  # too few of every class to stratify: groups alone
            cells = np.zeros(len(new), dtype=int)
        tr, va = held_out(cells, groups[new], n_splits, seed)
        side[new[tr]], side[new[va]] = "train", "val"
    else:  # too few to hold out a share of: they train
        side[new] = "train"
    counts = {"reused": reused, "joined_their_group": int(follow.sum()), "new": int(len(new))}
    return np.flatnonzero(side == "train"), np.flatnonzero(side == "val"), counts


@dataclass
class FoldPlan:
    """The decoded images, their duplicate groups and the fold (1..k) each image is held out in."""

    loaded: LoadedImages
    groups: np.ndarray  # (n,) group id: copies of one image share it
    folds: np.ndarray  # (n,) int in 1..n_folds
    n_folds: int
    by: str = "stratified"  # stratified: seeded StratifiedGroupKFold; source: fold i holds out collection i
    grouping: Grouping | None = None  # how ``groups`` were made (warnings, largest group); None: read back

    def fold_name(self, fold: int) -> str:
        """How reports name a fold: fold_3, or with --by source the collection it holds out."""
        return self.loaded.source_names[fold - 1] if self.by == "source" else f"fold_{fold}"



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


def assign_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int,
                 sources: Sequence[str] | None = None) -> np.ndarray:
    """Fold number (1..k) per image from StratifiedGroupKFold: a group never straddles two folds. ``sources``
    (the collection of each image) stratifies by collection x class (strata)."""
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.zeros(len(labels), dtype=np.int64)
    y = strata(labels, sources, n_folds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a small collection x class cell: fewer members than folds
        for i, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), y, groups), start=1):
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
        loaded, made = prepare_grouped(cfg)
        names = loaded.source_names
        if len(names) < 2:
            raise ConfigError("kfold --by source holds out one collection at a time and needs at least two: "
                              "--data NAME=DIR --data NAME2=DIR2")
        if n_folds is not None and n_folds != len(names):
            raise ConfigError(f"--folds {n_folds}: --by source makes one fold per collection ({len(names)}: "
                              f"{', '.join(names)}); drop --folds")
        folds = np.asarray([names.index(s) + 1 for s in loaded.sources], dtype=np.int64)
        return FoldPlan(loaded, made.groups, folds, len(names), by="source", grouping=made)
    n_folds = DEFAULT_FOLDS if n_folds is None else n_folds
    check_n_folds(n_folds)
    loaded, made = prepare_grouped(cfg)
    check_n_folds(n_folds, loaded.labels, made.groups, loaded.class_names)
    folds = assign_folds(loaded.labels, made.groups, n_folds, cfg.seed, loaded.sources)
    return FoldPlan(loaded, made.groups, folds, n_folds, grouping=made)


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


def write_split(run_dir: Path, loaded: LoadedImages, train_idx: np.ndarray, val_idx: np.ndarray,
                tune_idx: np.ndarray | None = None, groups: np.ndarray | None = None) -> None:
    """split.csv: which image went to training, which was scored (val; evaluate reuses it) and, in kfold, which
    inner split steered training (tune); with ``groups`` the group (duplicates, volume, patient) of each image."""
    side = np.full(len(loaded.paths), "", dtype=object)
    side[train_idx], side[val_idx] = "train", "val"
    if tune_idx is not None:
        side[tune_idx] = "tune"
    several = len(loaded.source_names) > 1
    sources = loaded.sources if several else [None] * len(loaded.paths)
    group = [None] * len(loaded.paths) if groups is None else groups
    write_csv(run_dir / "split.csv", ["path", "label", "class", "split", *(["source"] if several else []),
                                      *(["group"] if groups is not None else [])],
              ([p, int(y), loaded.class_names[int(y)], s, *([src] if several else []),
                *([int(g)] if groups is not None else [])]
               for p, y, s, src, g in zip(loaded.paths, loaded.labels, side, sources, group) if s))
