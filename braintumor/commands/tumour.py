"""``evaluate`` on tumour-or-not: the binary figures beside the 4-class ones, or alone for a yes/no collection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..binary import NO_TUMOUR_CLASS, truth_of_classes
from ..data import ImageList, load_images
from ..engine import scorer
from ..errors import DataError
from ..groups import evaluation_groups, patient_ids
from ..inference import Verdict, gate_report
from ..metrics import (
    binary_from_probs,
    binary_per_source,
)
from ..models.loading import LoadedRun
from ..report import write_metrics
from ..runs import write_csv, write_meta, write_skipped


def add_binary(m: dict[str, Any], run: LoadedRun, labels: np.ndarray, verdicts: list[Verdict], probs: np.ndarray,
               sources: list[str] | None, groups: np.ndarray, unit: str, patients: np.ndarray | None = None) -> None:
    """metrics["binary"] (and per source with several collections) from 4-class labels: tumour = any class but
    notumor; per patient too where ``patients`` (groups.patient_ids) names them. Nothing for a model without a
    notumor class."""
    truth = truth_of_classes(labels, run.class_names)
    if truth is None:
        return
    ok = np.array([v.answered for v in verdicts])
    cfg = run.config
    m["binary"] = binary_from_probs(truth, probs, run.class_names, ok, groups, unit, cfg.eval.bootstrap, cfg.seed,
                                    patients)
    if sources is not None and len(set(sources)) > 1:
        m["binary_per_source"] = binary_per_source(truth, probs, run.class_names, sources, ok, groups, unit,
                                                   cfg.eval.bootstrap, cfg.seed, patients)


def evaluate_binary(run: LoadedRun, listing: ImageList, out: Path, tta: bool, title: str,
                    groups_spec: str | None = None) -> dict[str, Any]:
    """Score a collection labelled only tumour / no tumour (binary.binary_listing): the binary figures, the gate's
    counts, metrics.json/.md, predictions.csv (truth: tumour / no_tumour) and skipped.txt."""
    loaded = load_images(listing, run.spec)
    if not len(loaded.paths):
        raise DataError(f"none of the {len(listing.paths)} images under {listing.root} could be read")
    verdicts = scorer.classify(run.classifier, loaded.images, loaded.stats, tta)
    probs = np.stack([v.probs for v in verdicts])
    groups, unit = evaluation_groups(run.config.data, loaded, None, groups_spec)
    keys = patient_ids(groups_spec or run.config.data.groups, loaded.paths)
    truth = loaded.labels == 1
    ok = np.array([v.answered for v in verdicts])
    cfg = run.config
    m: dict[str, Any] = {"n": int(len(truth)), "classes": list(run.class_names), "labels": "tumour or not",
                         "binary": binary_from_probs(truth, probs, run.class_names, ok, groups, unit,
                                                     cfg.eval.bootstrap, cfg.seed, keys),
                         "gate": gate_report(verdicts, None, "these images")}
    several = len(loaded.source_names) > 1
    if several:
        m["binary_per_source"] = binary_per_source(truth, probs, run.class_names, loaded.sources, ok, groups, unit,
                                                   cfg.eval.bootstrap, cfg.seed, keys)
    write_metrics(out, m, title + " (tumour or not)")
    names = run.class_names
    write_csv(out / "predictions.csv", ["path", *(["source"] if several else []), "true", "predicted",
                                        *[f"p_{c}" for c in names], "status", "reason"],
              ([p, *([s] if several else []), "tumour" if t else "no_tumour", names[int(np.argmax(v.probs))],
                *[f"{x:.6f}" for x in v.probs], v.status, v.reason]
               for p, s, t, v in zip(loaded.paths, loaded.sources or [None] * len(truth), truth, verdicts)))
    write_skipped(out, loaded.skipped)
    write_meta(out, n=m["n"], skipped=len(loaded.skipped), labels="tumour or not",
               tumour_probability=f"1 - p({NO_TUMOUR_CLASS})")
    return m
