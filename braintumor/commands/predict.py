"""The ``predict`` run: classify unlabelled images with a saved run, with the gate's status for each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import find_images, map_images
from ..engine import scorer
from ..engine.run import Run
from ..errors import DataError
from ..inference import Verdict, gate_report
from ..models.loading import load_run
from ..progress import Reporter, or_silent
from ..runs import write_csv, write_meta, write_skipped
from ..volumes import VolumeAnswer, has_volumes, pool, write_volumes

BATCH = 64  # images decoded and classified at a time: memory stays flat on long folders


@dataclass
class PredictReport:
    """What ``predict`` wrote: one row per readable image, the unreadable ones with the reason, and (when the
    inputs hold scanner volumes) one pooled answer per volume."""

    out_dir: Path
    class_names: list[str]
    rows: list[tuple[str, Verdict]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    has_gate: bool = True
    volumes: list[VolumeAnswer] = field(default_factory=list)


def run_predict(run_dir: str | Path, sources: Sequence[str | Path], *, runs_dir: str | Path = "runs",
                name: str | None = None, tta: bool | None = None, notumor_doubt: float | None = None,
                reporter: Reporter | None = None) -> PredictReport:
    """Classify image files and folders (searched recursively) into runs/predict/<timestamp>-<arch>/.

    Writes predictions.csv (path, status, reason, class, a calibrated probability per class; ``class`` is empty
    unless the status is ok), skipped.txt for unreadable files, and a gate summary in meta.json. No labels needed.
    When an input is a volume (a NIfTI file, a multi-frame DICOM, a DICOM series), volumes.csv holds one pooled
    answer per input volume (volumes.py says how); predictions.csv stays per slice.
    ``reporter`` hears a stage "classifying" of as many units as images (slices, after the run's data.slices),
    advanced a batch at a time. ``notumor_doubt`` overrides the run's ``eval.notumor_doubt`` (decision.Doubt).
    """
    # 1. what can be wrong with the request fails before a run directory exists
    run = load_run(run_dir).with_notumor_doubt(notumor_doubt)
    files = find_images(sources, run.spec.scan)  # scanner volumes: the slices the run's data.slices keeps
    if not files:
        raise DataError(f"no image files in {', '.join(map(str, sources)) or 'the arguments'}; pass image files "
                        "or folders of images")
    reporter = or_silent(reporter)
    reporter.start(len(files), "classifying")
    tta = run.config.eval.tta if tta is None else tta
    made = Run.create(runs_dir, "predict", run.config.model.arch, name, cfg=run.config, source_run=str(run.path),
                      inputs=[str(s) for s in sources], tta=tta, temperature=run.classifier.temperature,
                      gate=run.classifier.has_gate)
    out = made.path
    report = PredictReport(out, run.class_names, has_gate=run.classifier.has_gate)
    with made.marking():
        # 2. decode and classify a batch at a time
        for start in range(0, len(files), BATCH):
            batch = files[start:start + BATCH]
            results = map_images(batch, run.spec.read)
            good = [(p, r) for p, r in zip(batch, results) if not isinstance(r, str)]
            report.skipped += [(p, r) for p, r in zip(batch, results) if isinstance(r, str)]
            if good:
                images = np.stack([r[0] for _, r in good])
                verdicts = scorer.classify(run.classifier, images, [r[1] for _, r in good], tta)
                report.rows += [(p, v) for (p, _), v in zip(good, verdicts)]
            reporter.advance(len(batch))
        # 3. the table, the skipped list, a summary
        write_predictions_table(out / "predictions.csv", report.rows, run.class_names)
        write_skipped(out, report.skipped)
        summary = gate_report([v for _, v in report.rows], None, "these images")
        write_meta(out, n=len(report.rows), skipped=len(report.skipped), **{"gate_summary": summary})
        # 4. one answer per volume, when the inputs hold volumes
        ids = [p for p, _ in report.rows]
        if has_volumes(ids):
            report.volumes = pool(ids, [v for _, v in report.rows], run.classifier)
            write_volumes(out / "volumes.csv", report.volumes, run.class_names)
            write_meta(out, volumes=len(report.volumes))
        if not report.rows:
            raise DataError(f"none of the {len(files)} files could be read; see {out / 'skipped.txt'}")
    return report


def write_predictions_table(path: Path, rows: list[tuple[str, Verdict]], class_names: Sequence[str]) -> None:
    """predictions.csv: path, status, reason, class (only when ok), then a calibrated probability per class."""
    write_csv(path, ["path", "status", "reason", "class", *[f"p_{c}" for c in class_names]],
              ([p, v.status, v.reason, class_names[int(np.argmax(v.probs))] if v.answered else "",
                *[f"{x:.6f}" for x in v.probs]] for p, v in rows))
