"""The independent unit of a dataset: duplicate groups, scanner volumes and patients (``data.groups``), joined.

Splits never cut a group (train's validation split, kfold's folds) and the bootstrap intervals resample groups,
not images: slices of one patient are not independent evidence.

``data.groups`` names where the patient of an image is written:
- ``PATH.csv:COLUMN``: a CSV with the patient in COLUMN. Its rows are matched to images by a ``path`` column
  (relative to the CSV's folder, or absolute) when there is one, else by a ``name`` column, else by the first
  column, compared with the image's file name and its stem (``TCGA_DU_5849_19950405_10`` matches
  ``.../TCGA_DU_5849_19950405_10.jpg``).
- ``re:PATTERN``: a regular expression searched in the image's file name; its first capture group (or, without
  one, the whole match) is the patient, e.g. ``re:^(TCGA_[A-Z]{2}_\\d+)``.
An image no row or match names stays a group of its own (``unmatched`` counts them); a spec that names no image
at all is an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .dedup import (
    chain_warning,
    copies_across_owners,
    duplicate_groups,
    exact_groups,
    join_groups,
    largest_group,
    uniform,
)
from .errors import ConfigError, DataError
from .scanners import split_id
from .volumes import volume_of

SPEC_HELP = ("use PATH.csv:COLUMN (a CSV whose rows name images by a path, name or first column) or re:PATTERN "
             "(a regular expression searched in the file name; its first group is the patient)")


@dataclass(frozen=True)
class Spec:
    """A parsed ``data.groups``: a CSV column, or a file-name pattern."""

    csv: Path | None = None
    column: str | None = None
    pattern: re.Pattern | None = None


def parse_spec(spec: str) -> Spec:
    """``data.groups`` parsed; ConfigError naming the key and the valid forms when it is neither form."""
    if spec.startswith("re:"):
        try:
            return Spec(pattern=re.compile(spec[3:]))
        except re.error as e:
            raise ConfigError(f"data.groups {spec!r}: not a regular expression ({e}); {SPEC_HELP}") from None
    path, sep, column = spec.rpartition(":")
    if not sep or not path or not column:
        raise ConfigError(f"data.groups {spec!r}: {SPEC_HELP}")
    return Spec(csv=Path(path), column=column)


def patient_keys(spec: str, paths: Sequence[str]) -> list[str | None]:
    """The patient of every image (None where the spec does not name it)."""
    parsed = parse_spec(spec)
    files = [Path(split_id(str(p))[0]) for p in paths]  # a scanner slice id names its file
    if parsed.pattern is not None:
        found = [parsed.pattern.search(f.name) for f in files]
        return [None if m is None else (m.group(1) if m.re.groups else m.group(0)) for m in found]
    table = _read_csv(parsed.csv, parsed.column)
    if "path" in table.columns:
        def where(p: str) -> str:
            q = Path(p)
            return str((q if q.is_absolute() else parsed.csv.parent / q).resolve())
        by = {where(p): g for p, g in zip(table["path"].astype(str), table[parsed.column])}
        return [by.get(str(f.resolve())) for f in files]
    key = "name" if "name" in table.columns else table.columns[0]
    by = dict(zip(table[key].astype(str), table[parsed.column]))
    return [by.get(f.name, by.get(_stem(f))) for f in files]


def _stem(f: Path) -> str:
    return f.name[:-len(".nii.gz")] if f.name.endswith(".nii.gz") else f.stem


def _read_csv(path: Path, column: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"data.groups: {path} does not exist; {SPEC_HELP}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if column not in table.columns:
        raise DataError(f"data.groups: {path} has no column {column!r} (it has {', '.join(table.columns)}); "
                        f"name the patient column after the colon")
    return table


@dataclass(frozen=True)
class Patients:
    """Patient groups of a set of images, before joining."""

    keys: list[str | None]

    @property
    def unmatched(self) -> int:
        return sum(k is None for k in self.keys)

    @property
    def n_patients(self) -> int:
        return len({k for k in self.keys if k is not None})


def patients(spec: str | None, paths: Sequence[str], strict: bool = True) -> Patients | None:
    """The patients ``spec`` names among ``paths`` (None without a spec); DataError when it names none (unless
    not ``strict``: a folder to evaluate, which a training CSV need not list)."""
    if not spec:
        return None
    keys = patient_keys(spec, paths)
    if strict and paths and all(k is None for k in keys):
        example = Path(split_id(str(paths[0]))[0]).name
        raise DataError(f"data.groups {spec!r} names the patient of none of the {len(paths)} images (e.g. "
                        f"{example}); check the CSV's name/path column or the pattern")
    return Patients(keys)


def patient_ids(spec: str | None, paths: Sequence[str]) -> np.ndarray | None:
    """A patient key per image (None where ``spec`` names none), or None without a spec or when it names no image:
    for the per-patient tumour-or-not figures (metrics.patient_figures)."""
    found = patients(spec, paths, strict=False)
    if found is None or not found.n_patients:
        return None
    return np.asarray(found.keys, dtype=object)


def join_patients(groups: np.ndarray, found: Patients | None) -> np.ndarray:
    """Group ids that also join every image of one patient; images without a patient keep their group."""
    if found is None:
        return np.asarray(groups, dtype=np.int64)
    # an image without a patient gets a key of its own, so the join leaves it where it was
    keys = [f"patient:{k}" if k is not None else f"alone:{i}" for i, k in enumerate(found.keys)]
    return join_groups(groups, keys)


@dataclass
class Grouping:
    """How the images were grouped: the unit splits never cut, and what went into it."""

    groups: np.ndarray  # (n,) the unit: duplicates, volumes and patients joined
    found: Patients | None  # the patients of data.groups, or None without it
    duplicates: np.ndarray  # (n,) duplicate groups alone (exact, or near: pHash links), before the joins
    crossing: list[list[int]]  # exact copies (index lists) whose images name different patients

    def largest(self) -> dict[str, int]:
        """The largest group (the unit): its images and, with data.groups, the patients it holds."""
        g, size = largest_group(self.groups)
        keys = [] if self.found is None else [self.found.keys[i] for i in np.flatnonzero(self.groups == g)]
        return {"images": size, "patients": len(set(keys) - {None})}

    def warnings(self, paths: Sequence[str]) -> list[str]:
        """Plain sentences for the terminal and meta.json: a chained duplicate group, copies across patients."""
        out = [w for w in [chain_warning(self.duplicates)] if w]
        if self.crossing:
            a, b = (Path(split_id(str(paths[i]))[0]).name for i in self.crossing[0][:2])
            out.append(f"{len(self.crossing)} set(s) of identical pixels name different patients (data.groups), "
                       f"e.g. {a} and {b}; identical pixels are one image, so those patients are kept together: "
                       "check the patient names")
        return out


def split_groups(data_cfg, loaded, strict: bool = True,
                 spec: str | None = None) -> tuple[np.ndarray, Patients | None]:
    """The unit splits never cut (grouping: duplicates, volumes and patients joined). Returns (group id per
    image, the patients found or None)."""
    found = grouping(data_cfg, loaded, strict, spec)
    return found.groups, found.found


def grouping(data_cfg, loaded, strict: bool = True, spec: str | None = None) -> Grouping:
    """Duplicate groups (data.group_duplicates), scanner volumes and the patients of ``spec`` (default
    data.groups), joined transitively. A near (pHash) link never joins two images of different named patients:
    two patients' scans are different scans; identical pixels join whoever they are filed under."""
    found = patients(spec or getattr(data_cfg, "groups", None), loaded.paths, strict)
    owners = None if found is None else found.keys
    duplicates = duplicate_groups(loaded.digests, loaded.images, data_cfg.group_duplicates,
                                  data_cfg.near_threshold, owners)
    groups = join_patients(join_groups(duplicates, [volume_of(p) for p in loaded.paths]), found)
    crossing = [] if owners is None or data_cfg.group_duplicates == "none" else \
        copies_across_owners(exact_groups(loaded.digests), owners, uniform(loaded.images))
    return Grouping(groups, found, duplicates, crossing)


def unit_name(data_cfg, paths: Sequence[str] | None = None) -> str:
    """What one resampled group is, in words, for the sentence next to an interval; with ``paths``, whether
    data.groups names the patient of every one of them (unit_of)."""
    if paths is not None:
        return unit_of(patients(getattr(data_cfg, "groups", None), paths, strict=False))
    return "patients" if getattr(data_cfg, "groups", None) else "duplicate/volume groups"


def unit_of(found: Patients | None) -> str:
    """unit_name for images whose patients were looked up: 'patients' when every image has one, 'patients and
    duplicate/volume groups' when only some do (a collection without patient names beside one with them)."""
    if found is None or not found.n_patients:
        return "duplicate/volume groups"
    return "patients and duplicate/volume groups" if found.unmatched else "patients"


def sides_summary(groups: np.ndarray, sides: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    """Per side (e.g. train / val, or fold 1..k): images, groups, and groups shared with another side (0 when
    the split kept every group whole)."""
    groups = np.asarray(groups)
    owned = {name: set(groups[idx].tolist()) for name, idx in sides.items()}
    out = {}
    for name, idx in sides.items():
        others = set().union(*(g for n, g in owned.items() if n != name)) if len(owned) > 1 else set()
        out[name] = {"images": int(len(idx)), "groups": len(owned[name]), "shared": len(owned[name] & others)}
    return out


def describe(data_cfg, paths: Sequence[str], groups: np.ndarray,
             made: Grouping | None = None) -> dict[str, object]:
    """meta.json's account of the grouping: the unit, how many groups, and (with data.groups) patients found and
    images no row or pattern named; with ``made`` (the Grouping behind ``groups``) also the largest group and
    the warnings (a chained duplicate group, copies across patients)."""
    found = made.found if made is not None else patients(getattr(data_cfg, "groups", None), paths)
    out: dict[str, object] = {"unit": unit_of(found), "groups": int(len(np.unique(groups)))}
    if found is not None:
        out.update(spec=data_cfg.groups, patients=found.n_patients, unmatched=found.unmatched)
    if made is not None:
        out.update(largest_group=made.largest(), largest_duplicate_group=largest_group(made.duplicates)[1],
                   copies_across_patients=len(made.crossing), warnings=made.warnings(paths))
    return out


def from_split_csv(split_csv: Path, paths: Sequence[str]) -> np.ndarray | None:
    """The group of each of ``paths`` as a train run's split.csv recorded it (None for a run written before
    split.csv had a group column, or when a path is not listed)."""
    if not Path(split_csv).is_file():
        return None
    table = pd.read_csv(split_csv)
    if "group" not in table.columns:
        return None
    by = dict(zip(table["path"].astype(str), table["group"]))
    found = [by.get(str(p)) for p in paths]
    return None if any(g is None for g in found) else np.asarray(found, dtype=np.int64)


def evaluation_groups(data_cfg, loaded, split_csv: Path | None = None,
                      spec: str | None = None) -> tuple[np.ndarray, str]:
    """(group per image, unit name) for the intervals of an evaluation: a run's own validation split keeps the
    groups its split.csv recorded; a folder gets duplicate, volume and patient groups (``spec``, default the run's
    data.groups, which a folder's images need not appear in unless ``spec`` is given)."""
    if split_csv is not None:
        recorded = from_split_csv(split_csv, loaded.paths)
        if recorded is not None:
            return recorded, unit_name(data_cfg, loaded.paths)
    groups, found = split_groups(data_cfg, loaded, strict=spec is not None, spec=spec)
    return groups, unit_of(found)


def path_groups(spec: str | None, paths: Sequence[str]) -> tuple[np.ndarray, str]:
    """(group per image, unit name) from file names alone (no pixels): scanner volumes and the patients ``spec``
    names (images it does not name stay alone). For scores of single images such as localisation."""
    groups = join_groups(np.arange(len(paths)), [volume_of(p) for p in paths])
    found = patients(spec, paths, strict=False)
    unit = unit_of(found) if found is not None else "volumes"
    return join_patients(groups, found), unit
