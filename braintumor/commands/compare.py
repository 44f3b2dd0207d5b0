"""Side-by-side comparison of finished runs (train, evaluate, kfold), flagging runs that are not comparable.

Each run becomes one row of headline numbers. Runs are grouped into cohorts by class set and by the exact set
of images their metrics were computed on (the paths in predictions.csv), so numbers from different test data
are never shown as if they were comparable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import plots
from ..engine import scorer
from ..engine.results import (
    RECORDED_INFERENCE_KEY,
    Row,
    assign_cohorts,
    normalise_sort_key,
    read_run,
    sort_rows,
)
from ..engine.run import Run
from ..errors import RunError
from ..plots import atomic_save_figure
from ..runs import atomic_write_text

__all__ = ["Comparison", "Row", "compare", "display_cells", "markdown", "read_run", "run_compare", "to_frame"]


@dataclass
class Comparison:
    rows: list[Row]
    skipped: list[tuple[str, str]]  # (path, reason)
    warnings: list[str]
    cohorts: dict[str, str]  # letter -> description


# --------------------------------------------------------------------------------------- inference timing


def single_image_ms(model, input_shape: tuple[int, ...], repeats: int = 30, warmup: int = 5,
                    seed: int = 0) -> float:
    """Median milliseconds of one compiled single-image forward pass (``engine.scorer``'s compiled call, no XLA,
    traced and warmed up first; the time includes getting the probabilities back), on a random 0-255 image."""
    x = np.random.default_rng(seed).integers(0, 256, size=(1, *input_shape)).astype(np.float32)  # (1, h, w, c)
    return scorer.median_ms(scorer.compiled(model), x, repeats, warmup)


def measure_inference(rows: list[Row], repeats: int = 30) -> None:
    """Fill inference_ms for rows that did not record it, by loading each model once and timing it here."""
    import keras  # lazy, as in single_image_ms

    from .. import models  # noqa: F401  (registers the custom layers for safe loading)

    cache: dict[str, float] = {}
    for row in rows:
        if row.inference_source == "recorded":
            continue
        if not row.model_path or not row.input_shape:
            row.inference_source = "no model"
            continue
        if row.model_path not in cache:
            keras.backend.clear_session()
            model = keras.models.load_model(row.model_path, safe_mode=True)
            cache[row.model_path] = single_image_ms(model, row.input_shape, repeats)
            del model
        row.inference_ms, row.inference_source = round(cache[row.model_path], 3), "measured"


# --------------------------------------------------------------------------------------------- output


CSV_COLUMNS = ["run", "kind", "arch", "params", "image_size", "epochs_run", "n_eval", "accuracy",
               "accuracy_ci_low", "accuracy_ci_high", "ci_method", "auc", "loss", "macro_f1", "train_seconds",
               "train_images_per_second", "inference_ms", "inference_source", "cohort", "classes", "eval_set",
               "path"]


def to_frame(rows: list[Row]):
    records = []
    for r in rows:
        d = asdict(r)
        d["classes"] = " ".join(r.classes)
        records.append({c: d[c] for c in CSV_COLUMNS})
    return pd.DataFrame.from_records(records, columns=CSV_COLUMNS)


def _num(v: Any, fmt: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def display_cells(r: Row) -> dict[str, str]:
    """The human-readable cells shared by the Markdown and terminal tables."""
    unit = r.ci_method.removeprefix("bootstrap ").split(" (")[0]  # 'resampling 46 patients', 't over 5 folds'
    ci = (f" ({_num(r.accuracy_ci_low, '.3f')}-{_num(r.accuracy_ci_high, '.3f')}, {unit})"
          if math.isfinite(r.accuracy_ci_low) else "")
    return {
        "run": r.run, "kind": r.kind, "arch": r.arch or "-",
        "params": _count(r.params),
        "size": _num(r.image_size, "d") if isinstance(r.image_size, int) else "-",
        "epochs": _num(r.epochs_run, "g"),
        "accuracy (95% CI)": f"{_num(r.accuracy)}{ci}",
        "AUC": _num(r.auc), "loss": _num(r.loss), "macro-F1": _num(r.macro_f1),
        "train time": _duration(r.train_seconds),
        "train img/s": _num(r.train_images_per_second, ".1f"),
        "inference ms": _num(r.inference_ms, ".2f"),
        "cohort": r.cohort,
    }


def _count(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def markdown(cmp: Comparison, title: str = "Run comparison") -> str:
    """comparison.md: the table, what each cohort is, how inference was timed, and what was skipped."""
    cells = [display_cells(r) for r in cmp.rows]
    head = list(cells[0]) if cells else list(display_cells(Row("", "", "")))
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c[h].replace("|", "\\|") for h in head) + " |" for c in cells]
    lines += ["", "Cohorts (compare numbers only within one):", ""]
    lines += [f"- **{k}**: {v}" for k, v in cmp.cohorts.items()]
    if cmp.warnings:
        lines += [""] + [f"> **Warning:** {w}" for w in cmp.warnings]
    sources = sorted({r.inference_source for r in cmp.rows})
    lines += ["", "Accuracy intervals: 95% percentile bootstrap for train and evaluate runs, resampling the unit "
              "named beside each (patients where data.groups knows them, else duplicate and volume groups, else "
              "images); for kfold runs the fold mean with a 95% t-interval over the folds. "
              f"Inference: {inference_note(sources)}"]
    if cmp.skipped:
        lines += ["", "Skipped:", ""] + [f"- `{p}`: {why}" for p, why in cmp.skipped]
    return "\n".join(lines) + "\n"


def inference_note(sources: list[str]) -> str:
    notes = {
        "measured": "`measured` = median of a compiled single-image call (batch 1, tf.function, no XLA), "
                    "timed on this machine when the comparison was made",
        "recorded": f"`recorded` = the run's own `{RECORDED_INFERENCE_KEY}` in meta.json",
        "no model": "`no model` = the run has no model.keras to time",
        "not measured": "`not measured` = timing was switched off (--no-measure)",
    }
    return "; ".join(notes[s] for s in sources if s in notes) + "."


def figure(rows: list[Row]):
    """Accuracy per run with its 95% interval as whiskers; labels carry the cohort when there are several."""
    several = len({r.cohort for r in rows}) > 1
    labels = [f"{r.run} [{r.cohort}]" if several else r.run for r in rows]
    values = [r.accuracy for r in rows]
    errors = [(r.accuracy_ci_low if math.isfinite(r.accuracy_ci_low) else r.accuracy,
               r.accuracy_ci_high if math.isfinite(r.accuracy_ci_high) else r.accuracy) for r in rows]
    return plots.bar_figure(labels, values, errors, ylabel="accuracy (95% CI)", title="accuracy by run")


# --------------------------------------------------------------------------------------------- the command


def compare(paths: list[str | Path], sort: str | None = None, measure: bool = True,
            repeats: int = 30) -> Comparison:
    """Read every run, skipping (with the reason) what cannot be compared; group, time and sort the rest."""
    if sort:
        normalise_sort_key(sort)  # a bad key fails before any model is loaded
    rows, skipped, seen = [], [], set()
    for p in paths:
        key = str(Path(p).resolve())
        if key in seen:
            continue
        seen.add(key)
        try:
            rows.append(read_run(p))
        except RunError as e:
            skipped.append((str(p), str(e)))
    cohorts, warnings = assign_cohorts(rows)
    if measure:
        measure_inference(rows, repeats)
    return Comparison(sort_rows(rows, sort), skipped, warnings, cohorts)


def run_compare(paths: list[str | Path], runs_dir: str | Path = "runs", sort: str | None = None,
                measure: bool = True, repeats: int = 30, name: str | None = None) -> tuple[Path, Comparison]:
    """The ``compare`` command: runs/compare/<timestamp>/ with comparison.csv, .md and .png."""
    # 1. read and check everything before creating an output folder
    cmp = compare(paths, sort, measure, repeats)
    if not cmp.rows:
        reasons = "; ".join(f"{why}" for _, why in cmp.skipped) or "no run directories given"
        raise RunError(f"nothing to compare: {reasons}")

    # 2. the output folder, marked complete only when every file is written
    run = Run.create(runs_dir, "compare", None, name, inputs=[str(p) for p in paths], sort=sort,
                     measured_inference=measure)
    out = run.path
    with run.marking():
        atomic_write_text(out / "comparison.csv", to_frame(cmp.rows).to_csv(index=False))
        atomic_write_text(out / "comparison.md", markdown(cmp))
        atomic_save_figure(figure(cmp.rows), out / "comparison.png")
        run.write_json("skipped.json", [{"path": p, "reason": r} for p, r in cmp.skipped])
        run.update(runs=len(cmp.rows), skipped=len(cmp.skipped), cohorts=cmp.cohorts, warnings=cmp.warnings)
    return out, cmp
