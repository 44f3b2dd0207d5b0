"""Metrics from predictions, their files, and evaluating a saved run on any folder of class sub-folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import DEFAULT_NEAR_THRESHOLD
from ..dedup import copies_of
from ..errors import DataError, RunError
from ..metrics import compute_metrics, write_metrics, write_predictions
from ..models.loading import LoadedRun, evaluate_folder, evaluate_paths, load_run
from ..runs import new_run_dir, run_status, start_run, write_csv_dicts, write_meta, write_skipped
from ..scanners import ScanOptions


def read_split(run_dir: Path, which: str = "val") -> tuple[list[str], np.ndarray]:
    """Paths and labels of one side of a train run's split.csv."""
    path = Path(run_dir) / "split.csv"
    if not path.is_file():
        raise RunError(f"{run_dir} has no split.csv; pass --data DIR to evaluate on a folder")
    df = pd.read_csv(path)
    df = df[df["split"] == which]
    return df["path"].tolist(), df["label"].to_numpy(dtype=np.int64)


def run_evaluate(run_dir: str | Path, data: str | Path | None = None, *, runs_dir: str | Path = "runs",
                 name: str | None = None, tta: bool | None = None,
                 exclude_duplicates_of: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Evaluate a train run's best model on a folder (or its own validation split) into runs/evaluate/<run>/.

    ``exclude_duplicates_of`` (a training folder): score only images that are not exact or near copies of
    its images; metrics["excluded_duplicates"] says how many were left out, excluded.csv lists them.
    """
    run = load_run(run_dir)
    tta = run.config.eval.tta if tta is None else tta
    out = new_run_dir(runs_dir, "evaluate", run.config.model.arch, name)
    start_run(out, run.config, "evaluate", source_run=str(run.path),
              data=str(data) if data else "validation split of the source run", tta=tta)
    with run_status(out):
        if data is None:
            if "ensemble_of" in run.meta:
                raise RunError(f"{run.path} is a k-fold ensemble: every image of its folder trained one of its "
                               "models, so pass --data TEST_DIR (a folder it never saw)")
            loaded, probs = evaluate_paths(run, *read_split(run.path, "val"), tta=tta)
        else:
            loaded, probs = evaluate_folder(run, data, tta=tta)
        excluded = None
        if exclude_duplicates_of is not None:
            loaded, probs, excluded = exclude_copies(loaded, probs, exclude_duplicates_of, run, out)
        m = compute_metrics(loaded.labels, probs, run.class_names, run.config.eval.bootstrap, run.config.seed)
        if excluded is not None:
            m["excluded_duplicates"] = excluded
            write_meta(out, exclude_duplicates_of=str(exclude_duplicates_of), excluded=excluded["total"])
        without = f", without {excluded['total']} copies of {exclude_duplicates_of}" if excluded else ""
        write_metrics(out, m, f"Evaluation of {run.path.name} on {data or 'its validation split'}{without}")
        write_predictions(out / "predictions.csv", loaded.paths, loaded.labels, probs, run.class_names)
        write_skipped(out, loaded.skipped)
        write_meta(out, n=m["n"], skipped=len(loaded.skipped))
    return out, m


def exclude_copies(loaded, probs: np.ndarray, train_dir: str | Path, run: LoadedRun, out_dir: Path):
    """Drop the images that are exact or near copies of a training image; write excluded.csv.

    Returns (kept images, their probabilities, {"of", "near_threshold", "exact", "near", "total", "kept"}).
    """
    mask, rows = copies_of(train_dir, loaded.paths, run.config.data.classes, DEFAULT_NEAR_THRESHOLD,
                           scan=ScanOptions.from_config(run.config.data))
    keep = np.flatnonzero(~mask)
    if len(keep) == 0:
        raise DataError(f"all {len(mask)} images are copies of images under {train_dir}: none left to score")
    write_csv_dicts(out_dir / "excluded.csv", ["path", "copy_of", "distance", "kind"], rows)
    kept = loaded.subset(keep)
    kept.skipped = loaded.skipped
    exact = sum(r["kind"] == "exact" for r in rows)
    info = {"of": str(train_dir), "near_threshold": DEFAULT_NEAR_THRESHOLD, "exact": exact,
            "near": len(rows) - exact, "total": len(rows), "kept": int(len(keep))}
    return kept, probs[keep], info


