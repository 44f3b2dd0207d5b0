"""Metrics from predictions, their files, and evaluating a saved run on any folder of class sub-folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from .. import plots
from ..binary import binary_listing
from ..config import DEFAULT_NEAR_THRESHOLD
from ..data import LoadedImages, find_images, map_images
from ..dedup import copies_of
from ..engine import scorer
from ..engine.run import Run
from ..errors import ConfigError, DataError, RunError
from ..groups import evaluation_groups, patient_ids
from ..inference import Verdict, gate_report
from ..metrics import (
    ECE_BINS,
    calibration_figures,
    compute_metrics,
    per_source_metrics,
)
from ..models.loading import LoadedRun, load_folder, load_listing, load_run
from ..ood import refusal_report
from ..plots import atomic_save_figure
from ..report import write_metrics, write_predictions
from ..runs import write_csv, write_csv_dicts, write_meta, write_skipped
from ..volumes import has_volumes, pool, volume_labels, volume_metrics, write_volumes
from .tumour import add_binary, evaluate_binary


def read_split(run_dir: Path, which: str = "val") -> tuple[list[str], np.ndarray, list[str]]:
    """Paths, labels and collection names (empty for a split.csv of one unnamed collection) of one side of a
    train run's split.csv."""
    path = Path(run_dir) / "split.csv"
    if not path.is_file():
        raise RunError(f"{run_dir} has no split.csv; pass --data DIR to evaluate on a folder")
    df = pd.read_csv(path)
    df = df[df["split"] == which]
    sources = df["source"].astype(str).tolist() if "source" in df else []
    return df["path"].tolist(), df["label"].to_numpy(dtype=np.int64), sources


def run_evaluate(run_dir: str | Path, data: str | Path | Sequence[str | Path] | None = None, *,
                 runs_dir: str | Path = "runs", name: str | None = None, tta: bool | None = None,
                 exclude_duplicates_of: str | Path | None = None, ood: str | Path | None = None,
                 groups: str | None = None, binary_labels: Sequence[str] | None = None,
                 notumor_doubt: float | None = None) -> tuple[Path, dict[str, Any]]:
    """Evaluate a train run's best model on a folder (or its own validation split) into runs/evaluate/<run>/.

    Probabilities are the run's calibrated ones and every image gets the gate's status (predictions.csv's
    ``status`` and ``reason``; metrics["gate"] counts them and scores the accepted images).
    ``exclude_duplicates_of`` (a training folder): its images' exact and near copies are left out (excluded.csv).
    ``ood`` (a folder of images that must be refused): metrics["ood"] scores the gate on it against the
    labelled images (AUROC, refusal rates, accuracy on the accepted), with plots/ood_scores.png.
    When the images hold scanner volumes, metrics["volumes"] scores the pooled answer per volume (volumes.csv).
    ``groups`` (a data.groups spec; default the run's): the patients the intervals resample, with duplicate and
    volume groups (groups.evaluation_groups); metrics["interval"] names the unit.
    A model with a notumor class also gets metrics["binary"] (tumour or not: sensitivity, specificity, missed
    tumours among accepted answers, AUC of 1 - p(notumor)); a folder labelled only tumour / no tumour (yes/no,
    ``binary_labels`` FOLDER=tumour|no_tumour, default the run's eval.binary_labels) gets those figures alone;
    ``notumor_doubt`` overrides the run's ``eval.notumor_doubt`` (decision.Doubt)."""
    run = load_run(run_dir).with_notumor_doubt(notumor_doubt)
    data, shown = one_or_many(data)
    tta = run.config.eval.tta if tta is None else tta
    if ood is not None and not find_images([ood]):
        raise DataError(f"--ood {ood}: no image files there; pass a folder of images that are not brain MRI")
    made = Run.create(runs_dir, "evaluate", run.config.model.arch, name, cfg=run.config, source_run=str(run.path),
                      data=str(shown) if data else "validation split of the source run", tta=tta,
                      ood=str(ood) if ood else None)
    out = made.path
    with made.marking():
        if data is None:
            loaded = validation_listing(run)
        else:
            binary = binary_listing(data, run.class_names, run.config.eval.binary_labels if binary_labels is None
                                    else binary_labels, run.spec.scan)
            if binary is not None and (ood is not None or exclude_duplicates_of is not None):
                raise ConfigError("--ood and --exclude-duplicates-of score collections of the model's classes; "
                                  f"{shown} is labelled tumour / no tumour: evaluate it without them")
            if binary is not None:  # a tumour-or-not collection: the binary figures alone
                return out, evaluate_binary(run, binary, out, tta, f"Evaluation of {run.path.name} on {shown}",
                                            groups)
            loaded = load_folder(run, data)
        excluded = None
        if exclude_duplicates_of is not None:
            loaded, excluded = exclude_copies(loaded, exclude_duplicates_of, run, out)
        m, verdicts, probs = score_listing(run, loaded, tta, groups, own_split=data is None)
        several = len(loaded.source_names) > 1
        if excluded is not None:
            m["excluded_duplicates"] = excluded
            write_meta(out, exclude_duplicates_of=str(exclude_duplicates_of), excluded=excluded["total"])
        if ood is not None:
            m["ood"] = score_refusals(run, verdicts, ood, tta, out, loaded.sources if several else None)
        if has_volumes(loaded.paths):
            m["volumes"] = score_volumes(run, loaded.paths, loaded.labels, verdicts, out)
        without = f", without {excluded['total']} copies of {exclude_duplicates_of}" if excluded else ""
        write_metrics(out, m, f"Evaluation of {run.path.name} on {shown or 'its validation split'}{without}")
        write_predictions(out / "predictions.csv", loaded.paths, loaded.labels, probs, run.class_names, verdicts,
                          loaded.sources if several else None)
        write_skipped(out, loaded.skipped)
        write_meta(out, n=m["n"], skipped=len(loaded.skipped))
    return out, m


def validation_listing(run: LoadedRun) -> LoadedImages:
    """The source run's own validation images (a k-fold ensemble has none it never trained on)."""
    if "ensemble_of" in run.meta:
        raise RunError(f"{run.path} is a k-fold ensemble: every image of its folder trained one of its "
                       "models, so pass --data TEST_DIR (a folder it never saw)")
    paths, labels, sources = read_split(run.path, "val")
    return load_listing(run, paths, labels, sources)


def one_or_many(data: str | Path | Sequence[str | Path] | None) -> tuple[Any, str | Path | None]:
    """--data as one folder, a list of several, or None, and how the report names it."""
    if data is not None and not isinstance(data, (str, Path)):
        data = list(data) if len(data) > 1 else data[0] if data else None
    return data, data if data is None or isinstance(data, (str, Path)) else ", ".join(map(str, data))


def score_listing(run: LoadedRun, loaded: LoadedImages, tta: bool, groups: str | None, *,
                  own_split: bool) -> tuple[dict[str, Any], list[Verdict], np.ndarray]:
    """One scorer pass over the loaded images and the metrics of it: the intervals' groups, per source, the gate,
    tumour or not, and the stored temperature's calibration figures. ``own_split``: the images are the source
    run's validation split (its split.csv holds their groups)."""
    verdicts = scorer.classify(run.classifier, loaded.images, loaded.stats, tta)
    probs = np.stack([v.probs for v in verdicts])
    units, unit = evaluation_groups(run.config.data, loaded, run.path / "split.csv" if own_split else None, groups)
    m = compute_metrics(loaded.labels, probs, run.class_names, run.config.eval.bootstrap, run.config.seed,
                        units, unit)
    several = len(loaded.source_names) > 1
    if several:
        m["per_source"] = per_source_metrics(loaded.labels, probs, loaded.sources, run.class_names)
    m["gate"] = gate_report(verdicts, loaded.labels, "these images")
    add_binary(m, run, loaded.labels, verdicts, probs, loaded.sources if several else None, units, unit,
               patient_ids(groups or run.config.data.groups, loaded.paths))
    if run.classifier.temperature != 1.0:
        m["calibration"] = {"temperature": run.classifier.temperature, "fitted_on": "the source run",
                            "ece_bins": ECE_BINS, "after": calibration_figures(loaded.labels, probs),
                            "after_is": "the stored temperature applied to these images"}
    return m, verdicts, probs


def score_volumes(run: LoadedRun, paths: list[str], labels: np.ndarray, verdicts: list[Verdict],
                  out: Path) -> dict[str, Any]:
    """Pool the slices of each volume (volumes.py's rule), score the volumes against their class folder's label
    and write volumes.csv."""
    answers = pool(paths, verdicts, run.classifier)
    truth = volume_labels(paths, labels)
    write_volumes(out / "volumes.csv", answers, run.class_names, truth)
    return volume_metrics(answers, truth, run.class_names)


def score_refusals(run: LoadedRun, scans: list[Verdict], ood_dir: str | Path, tta: bool,
                   out: Path, sources: list[str] | None = None) -> dict[str, Any]:
    """The gate on images that must be refused (``ood_dir``) against labelled scans that must be accepted;
    ``per_folder`` and ``per_collection`` break it down (each sub-folder of ``ood_dir``, each ``sources`` name)."""
    paths = find_images([ood_dir], run.spec.scan)
    results = map_images(paths, run.spec.read)
    good = [r for r in results if not isinstance(r, str)]
    if not good:
        raise DataError(f"none of the {len(paths)} files under {ood_dir} could be read")
    others = scorer.classify(run.classifier, np.stack([r[0] for r in good]), [r[1] for r in good], tta)
    read = [p for p, r in zip(paths, results) if not isinstance(r, str)]
    write_csv(out / "ood_predictions.csv", ["path", "status", "reason", "ratio", "head_margin"],
              ([p, v.status, v.reason, "" if v.ratio is None else f"{v.ratio:.4f}",
                "" if v.head is None else f"{v.head:.4f}"] for p, v in zip(read, others)))
    refused = {"scans": float(np.mean([not v.answered for v in scans])),
               "ood": float(np.mean([not v.answered for v in others]))}
    result: dict[str, Any] = {"folder": str(ood_dir), "n_ood": len(others), "n_scans": len(scans),
                              "unreadable": len(paths) - len(good), "refused_scans": refused["scans"],
                              "refused_ood": refused["ood"], "status_counts_ood": gate_report(others, None, "")[
                                  "status_counts"]}
    result.update(refusals_by_group(scans, sources, others, read, ood_dir))
    if run.classifier.has_gate:
        # one score per image (Verdict.score: the distance, or with a head the larger of it and the head's);
        # refused outright by an input check or the header = beyond every score
        score = [np.inf if (v.status == "out_of_distribution" and v.score is not None and v.score <= 1.0)
                 else v.score for v in scans + others]
        truth = np.r_[np.zeros(len(scans)), np.ones(len(others))]
        result["auroc"] = float(roc_auc_score(truth, np.nan_to_num(np.asarray(score, float), posinf=1e9)))
        atomic_save_figure(plots.score_histogram_figure(
            {"labelled scans (must be accepted)": [v.score for v in scans],
             f"{Path(ood_dir).name} (must be refused)": [v.score for v in others]}, 1.0,
            "the gate's score / its threshold",
            f"{run.path.name}: refused {refused['scans']:.1%} of the scans, {refused['ood']:.1%} of the others"),
            out / "plots" / "ood_scores.png")
    else:
        result["auroc"] = None
        result["note"] = "this run has no out-of-distribution gate (trained before it existed): nothing is refused"
    return result


def refusals_by_group(scans: list[Verdict], sources: list[str] | None, others: list[Verdict], paths: list[str],
                      ood_dir: str | Path) -> dict[str, Any]:
    """``per_folder``: each top sub-folder of ``ood_dir`` (the kinds of image that must be refused) with its
    out_of_distribution / uncertain counts and AUROC against each accepted collection; ``per_collection``: the
    refused share of each collection of labelled scans (one, ``scans``, when they have no sources)."""
    folder = [_top_folder(p, Path(ood_dir)) for p in paths]
    names = sources or ["scans"] * len(scans)

    def pick(verdicts, keys, k):
        chosen = [v for v, key in zip(verdicts, keys) if key == k]
        return [v.status for v in chosen], [v.score for v in chosen]

    report = refusal_report({k: pick(scans, names, k) for k in dict.fromkeys(names)},
                            {k: pick(others, folder, k) for k in sorted(set(folder))})
    return {"per_folder": report["refused"], "per_collection": report["accepted"]}


def _top_folder(image_id: str, root: Path) -> str:
    """The sub-folder of ``root`` an image id (``file``, ``file#slice``, ``file@series#k``) lies in; ``root``'s
    own name for files directly in it."""
    path = Path(image_id.split("@")[0].split("#")[0])
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return root.name
    return parts[0] if len(parts) > 1 else root.name


def exclude_copies(loaded, train_dir: str | Path, run: LoadedRun, out_dir: Path):
    """Drop the images that are exact or near copies of a training image; write excluded.csv.

    Returns (kept images, {"of", "near_threshold", "exact", "near", "total", "kept"}).
    """
    mask, rows = copies_of(train_dir, loaded.paths, run.config.data.classes, DEFAULT_NEAR_THRESHOLD,
                           scan_options=run.spec.scan)
    keep = np.flatnonzero(~mask)
    if len(keep) == 0:
        raise DataError(f"all {len(mask)} images are copies of images under {train_dir}: none left to score")
    write_csv_dicts(out_dir / "excluded.csv", ["path", "copy_of", "distance", "kind"], rows)
    kept = loaded.subset(keep)
    kept.skipped = loaded.skipped
    exact = sum(r["kind"] == "exact" for r in rows)
    info = {"of": str(train_dir), "near_threshold": DEFAULT_NEAR_THRESHOLD, "exact": exact,
            "near": len(rows) - exact, "total": len(rows), "kept": int(len(keep))}
    return kept, info


