"""Tumour-or-not collections: folders labelled only "tumour present" / "no tumour", mapped and listed.

Many public sets say only yes/no. A folder is read as
1. what ``eval.binary_labels`` (or ``evaluate --binary-label``) says: ``FOLDER=tumour`` or ``FOLDER=no_tumour``;
2. else a known spelling (DEFAULTS: yes/no, tumor/no_tumor, tumour/no_tumour, 1/0, positive/negative,
   abnormal/normal, true/false; case, spaces and punctuation ignored);
3. else one of the model's classes (data.find_class): ``notumor`` (no_tumor, normal, ...) is no tumour, every other
   class (glioma, meningioma, pituitary) a tumour.
A collection whose folders are all classes of the model is scored on its classes too; any other is scored on the
binary figures alone (metrics.binary_metrics).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data import ImageList, find_class, find_images, parse_sources
from .errors import ConfigError, DataError
from .scanners import ScanOptions

TUMOUR, CLEAN = 1, 0
NO_TUMOUR_CLASS = "notumor"
_WORDS = {"tumour": TUMOUR, "tumor": TUMOUR, "yes": TUMOUR, "1": TUMOUR, "no_tumour": CLEAN, "no_tumor": CLEAN,
          "notumour": CLEAN, "notumor": CLEAN, "no": CLEAN, "0": CLEAN, "clean": CLEAN}
DEFAULTS = {"yes": TUMOUR, "no": CLEAN, "tumor": TUMOUR, "notumor": CLEAN, "tumour": TUMOUR, "notumour": CLEAN,
            "1": TUMOUR, "0": CLEAN, "positive": TUMOUR, "negative": CLEAN, "abnormal": TUMOUR, "normal": CLEAN,
            "true": TUMOUR, "false": CLEAN}
LABEL_HELP = "FOLDER=tumour or FOLDER=no_tumour (e.g. yes=tumour, no=no_tumour)"


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def parse_labels(entries: Sequence[str]) -> dict[str, int]:
    """``["Y=tumour", "N=no_tumour"]`` -> {folder key: 1 or 0}; ConfigError naming the entry when malformed."""
    out = {}
    for entry in entries:
        folder, sep, word = entry.partition("=")
        label = _WORDS.get(word.strip().lower())
        if not sep or not folder.strip() or label is None:
            raise ConfigError(f"binary label {entry!r}: use {LABEL_HELP}")
        out[_key(folder)] = label
    return out


def folder_label(folder: str, labels: dict[str, int], class_names: Sequence[str]) -> int | None:
    """1 (tumour), 0 (no tumour) or None (unknown) for one class folder's name."""
    key = _key(folder)
    if key in labels:
        return labels[key]
    if key in DEFAULTS:
        return DEFAULTS[key]
    index = find_class(folder, class_names)
    if index is None:
        return None
    return CLEAN if class_names[index] == NO_TUMOUR_CLASS else TUMOUR


def truth_of_classes(labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray | None:
    """(n,) bool tumour truth of 4-class labels, or None when the model has no 'notumor' class."""
    if NO_TUMOUR_CLASS not in class_names:
        return None
    return np.asarray(labels) != list(class_names).index(NO_TUMOUR_CLASS)


def _folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; pass --data DIR, a folder with one sub-folder per class")
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def binary_listing(data, class_names: Sequence[str], entries: Sequence[str] = (),
                   scan_options: ScanOptions = ScanOptions()) -> ImageList | None:
    """None when every folder of every collection is one of the model's classes (score it as usual); else the
    images listed with labels 1 (tumour) / 0 (no tumour) from the folder names. DataError naming the folders
    that are neither, and how to map them."""
    if NO_TUMOUR_CLASS not in class_names and entries:
        raise ConfigError(f"binary labels need a model with a {NO_TUMOUR_CLASS!r} class (the tumour probability is "
                          f"1 - p({NO_TUMOUR_CLASS})); this model's classes are {', '.join(class_names)}")
    labels = parse_labels(entries)
    sources = parse_sources(data)
    per = [(s, _folders(s.path)) for s in sources]
    if all(find_class(f, class_names) is not None and _key(f) not in labels for _, folders in per for f in folders):
        return None
    if NO_TUMOUR_CLASS not in class_names:
        return None  # not a tumour model: the usual listing reports the folders it cannot map
    unknown = [f"{s.path / f}" for s, folders in per for f in folders if folder_label(f, labels, class_names) is None]
    if unknown:
        raise DataError(f"folder(s) {', '.join(unknown)} are neither one of the model's classes nor a known "
                        f"tumour/no-tumour name; map them with --binary-label {LABEL_HELP} (or eval.binary_labels)")
    paths, truth, names = [], [], []
    for s, folders in per:
        for f in folders:
            found = find_images([s.path / f], scan_options)
            paths += found
            truth += [folder_label(f, labels, class_names)] * len(found)
            names += [s.name] * len(found)
    if not paths:
        raise DataError(f"no image files under {', '.join(str(s.path) for s in sources)}")
    return ImageList(sources[0].path, tuple(paths), np.asarray(truth, dtype=np.int64), ("no_tumour", "tumour"),
                     {}, scan_options, tuple(names))
