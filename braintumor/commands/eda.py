"""`eda`: a dataset report: class counts, pixel statistics, image properties, confounds (properties that predict
the class: collection, contrast, plane, skull, frame, head share, colour, size, brightness), duplicates within and
across splits.

Every image is read once at full size: the decoded pixels give the exact-copy digest, the mean pixel value, the
colour check, the perceptual hash (imagehash.phash) and the confound estimates (confounds.measure). Everything
after that works on those small per-image records (eda.stats, eda.confound_report); only the figures
(eda.figures) open a few files again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import confounds, runs
from ..config import DEFAULT_NEAR_THRESHOLD
from ..dedup import summarize_folder
from ..eda import confound_report, figures, report, stats
from ..engine.run import Run
from ..errors import DataError
from ..progress import Reporter


def run_eda(data: str | Path | Sequence[str | Path], test: str | Path | None = None, *,
            near_threshold: int = DEFAULT_NEAR_THRESHOLD, confound_threshold: float = confounds.WARN_V,
            runs_dir: str | Path = "runs", name: str | None = None, classes: tuple[str, ...] | None = None,
            samples_per_class: int = 6, seed: int = 0, workers: int | None = None,
            reporter: Reporter | None = None) -> tuple[Path, dict[str, Any]]:
    """Report on a folder (and optionally a test folder) in runs/eda/<timestamp>/; returns (dir, summary).

    ``data`` may be several folders (collections; NAME=PATH names one): they are read as one training split whose
    images keep their source, and the report adds class balance and pixel statistics per source. The confound
    table is of the training split: a property whose Cramer's V with the class reaches ``confound_threshold``
    gets a warning in summary["confounds"]["warnings"]."""
    if not 0 <= near_threshold <= 64:
        raise DataError(f"--near-threshold {near_threshold} is not valid; use 0 to 64 bits (pHash has 64)")
    if not 0 < confound_threshold <= 1:
        raise DataError(f"--confound-threshold {confound_threshold} is not valid; use a Cramer's V in (0, 1]")
    started = time.perf_counter()
    # 1. read every image once (before creating the run directory: a bad folder leaves nothing behind)
    splits = [summarize_folder(data, "train", classes, workers, reporter, measure=confounds.measure)]
    if test is not None:
        splits.append(summarize_folder(test, "test", classes, workers, reporter))
    for sp in splits:
        if not len(sp):
            raise DataError(f"none of the image files under {sp.root} could be read")
    run = Run.create(runs_dir, "eda", name=name, seed=seed,
                     data=str(data) if isinstance(data, (str, Path)) else [str(d) for d in data],
                     test=str(test) if test else None, near_threshold=near_threshold,
                     confound_threshold=confound_threshold)
    out = run.path
    with run.marking():
        # 2. duplicate groups over all splits, then the summary
        combined = stats.Combined.of(splits, near_threshold)
        summary = stats.summarize(splits, near_threshold, combined=combined)
        # 3. confounds of the training split: which properties predict the class
        table, values = confound_report.confound_table(splits[0], confound_threshold)
        summary["confounds"] = table
        # 4. files
        report.write_duplicates_csv(out / "duplicates.csv", stats.duplicate_rows(combined))
        confound_report.write(out, splits[0], table, values)
        figures.write_figures(out, splits, summary, combined, samples_per_class, seed)
        figures.write_confound_figures(out, splits[0], table, values, per_cell=3, seed=seed)
        summary["duration_s"] = round(time.perf_counter() - started, 2)
        runs.atomic_write_json(out / "summary.json", summary)
        runs.atomic_write_text(out / "report.md", report.report_markdown(summary))
    return out, summary
