"""The stress report: a run's model and gate on labelled images under controlled shifts (shifts.SHIFTS: contrast
inversion and gray-level remapping as a sequence proxy, gamma, bias field, Rician noise, blur, down-sampling, JPEG,
skull stripping, zoom, rotation) at rising severities, into runs/stress/<run>/ (stress.json, stress.md,
plots/stress.png)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import plots
from ..engine import scorer
from ..engine.run import Run
from ..errors import ConfigError
from ..inference import Verdict, gate_report
from ..input_checks import InputStats
from ..metrics import binary_from_probs, ece
from ..models.loading import load_folder, load_run
from ..plots import atomic_save_figure
from ..progress import Reporter, or_silent
from ..runs import (
    atomic_write_json,
    atomic_write_text,
    markdown_table,
    write_meta,
    write_skipped,
)
from ..shifts import SHIFTS

NO_TUMOUR = "notumor"
METRICS = ("accuracy", "sensitivity", "specificity", "ece", "refused", "notumor_ok_on_tumour")


def run_stress(run_dir: str | Path, data: str | Path | Sequence[str | Path], *, runs_dir: str | Path = "runs",
               name: str | None = None, tta: bool | None = None, only: Sequence[str] | None = None,
               per_class: int = 0, seed: int | None = None,
               reporter: Reporter | None = None) -> tuple[Path, dict[str, Any]]:
    """Score a run on ``data`` unchanged and under every shift in ``only`` (default: all) at each severity.

    Every row goes through the run's Classifier (calibrated probabilities, the gate's verdicts), as ``evaluate``
    and ``predict`` do. The unchanged row uses each decoded image's input-check figures; a shifted row measures them
    on the shifted model input. ``per_class`` > 0 scores a seeded random sample of that many images per class.
    Random parts of a shift (the remapping curve, the bias field, the noise) are drawn once from ``seed`` and reused
    at every severity, so only the severity changes along a curve. ``reporter`` hears a stage "shifted scorings"
    with one unit per scoring.
    """
    chosen = _chosen(only)
    run = load_run(run_dir)
    tta = run.config.eval.tta if tta is None else tta
    seed = run.config.seed if seed is None else seed
    data = [data] if isinstance(data, (str, Path)) else list(data)
    made = Run.create(runs_dir, "stress", run.config.model.arch, name, cfg=run.config, source_run=str(run.path),
                      data=", ".join(map(str, data)), tta=tta, shifts=list(chosen), per_class=per_class,
                      stress_seed=seed)
    out = made.path
    with made.marking():
        loaded = load_folder(run, data)
        if per_class > 0:
            loaded = loaded.subset(_sample(loaded.labels, per_class, seed))
        reporter = or_silent(reporter)
        reporter.start(1 + sum(len(SHIFTS[s].levels) - 1 for s in chosen), "shifted scorings")
        labels, names = loaded.labels, list(run.class_names)
        plain = score(labels, scorer.classify(run.classifier, loaded.images, loaded.stats, tta), names)
        reporter.advance()
        result: dict[str, Any] = {"run": str(run.path), "data": [str(d) for d in data], "n": int(len(labels)),
                                  "tta": tta, "seed": seed, "unchanged": plain, "shifts": {}}
        for key in chosen:
            shift, rows = SHIFTS[key], [{"severity": 0, "level": SHIFTS[key].levels[0], **plain}]
            for severity in range(1, len(shift.levels)):
                images = shift.apply(loaded.images, severity, seed)
                verdicts = scorer.classify(run.classifier, images, input_stats(images, loaded.stats), tta)
                rows.append({"severity": severity, "level": shift.levels[severity], **score(labels, verdicts, names)})
                reporter.advance()
            result["shifts"][key] = {"unit": shift.unit, "rows": rows}
        atomic_write_json(out / "stress.json", result)
        atomic_write_text(out / "stress.md", stress_markdown(result, run.path.name))
        atomic_save_figure(plots.stress_figure(_curves(result), f"{run.path.name} under shifts ({len(labels)} "
                                               "images)"), out / "plots" / "stress.png")
        write_skipped(out, loaded.skipped)
        write_meta(out, n=int(len(labels)), skipped=len(loaded.skipped))
    return out, result


def _chosen(only: Sequence[str] | None) -> list[str]:
    if not only:
        return list(SHIFTS)
    unknown = [s for s in only if s not in SHIFTS]
    if unknown:
        raise ConfigError(f"--shift {unknown[0]!r} is not a shift; choose from {', '.join(SHIFTS)}")
    return list(dict.fromkeys(only))


def _sample(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Up to ``per_class`` random images of each class (seeded), in their original order."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def input_stats(images: np.ndarray, original: Sequence[InputStats]) -> list[InputStats]:
    """The gate's input-check figures of shifted (n, h, w, c) uint8 model inputs: the pixel figures measured on
    them, whatever else the original files said (a DICOM header's facts) kept."""
    fresh = [InputStats.of(Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)) for img in images]
    if not original:
        return fresh
    return [dataclasses.replace(o, colourfulness=f.colourfulness, spread=f.spread) for o, f in zip(original, fresh)]


def tumour_figures(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict[str, float | None]:
    """Tumour or not (metrics.binary_from_probs: tumour = any class but notumor, called a tumour when the top class
    is not notumor): sensitivity and specificity, without intervals (a stress row is one point of a curve); None
    where the images have no tumour, or no notumor, image, or the model has no notumor class."""
    if NO_TUMOUR not in class_names:
        return {"sensitivity": None, "specificity": None}
    truth = np.asarray(labels) != class_names.index(NO_TUMOUR)
    b = binary_from_probs(truth, probs, class_names, n_boot=0)
    return {"sensitivity": b["sensitivity"], "specificity": b["specificity"]}


def score(labels: np.ndarray, verdicts: list[Verdict], class_names: list[str]) -> dict[str, Any]:
    """One row: accuracy, tumour sensitivity and specificity, ECE, the gate's refusals (uncertain or
    out_of_distribution) and the share of tumour images answered notumor with status ok (the dangerous miss)."""
    probs = np.stack([v.probs for v in verdicts])
    gate = gate_report(verdicts, labels, "")
    row: dict[str, Any] = {"accuracy": float((probs.argmax(axis=1) == labels).mean()),
                           **tumour_figures(labels, probs, class_names), "ece": ece(labels, probs),
                           "refused": gate["refused"], "status_counts": gate["status_counts"],
                           "accuracy_accepted": gate.get("accuracy_accepted"), "notumor_ok_on_tumour": None}
    if NO_TUMOUR in class_names:
        k = class_names.index(NO_TUMOUR)
        tumour = labels != k
        missed_ok = np.array([v.status == "ok" and int(v.probs.argmax()) == k for v in verdicts])
        row["notumor_ok_on_tumour"] = float(missed_ok[tumour].mean()) if tumour.any() else None
    return row


def _curves(result: dict[str, Any]) -> dict[str, dict[str, list]]:
    """{metric: {shift: values by severity}} for the plot (None where a metric does not apply)."""
    return {m: {s: [r[m] for r in v["rows"]] for s, v in result["shifts"].items()} for m in METRICS}


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def stress_markdown(result: dict[str, Any], run_name: str) -> str:
    """stress.md: what was done, then one table row per shift and severity."""
    u = result["unchanged"]
    lines = [f"# {run_name} under controlled shifts", "",
             f"{result['n']} labelled images of {', '.join(result['data'])}; test-time flip "
             f"{'on' if result['tta'] else 'off'}; random parts of the shifts drawn from seed {result['seed']}. "
             "Shifts act on the model input (the image already resized). Tumour = any class but notumor; "
             "sensitivity = tumour images whose top class is a tumour; refused = the gate said uncertain or "
             "out_of_distribution; `notumor ok` = tumour images answered notumor with status ok.", "",
             f"Unchanged: accuracy {_fmt(u['accuracy'])}, sensitivity {_fmt(u['sensitivity'])}, specificity "
             f"{_fmt(u['specificity'])}, ECE {_fmt(u['ece'])}, refused {_fmt(u['refused'])}.", "",
             "![metrics by severity](plots/stress.png)", ""]
    rows = [[name, r["severity"], "-" if r["level"] is None else f"{r['level']:g}", *(_fmt(r[m]) for m in METRICS)]
            for name, v in result["shifts"].items() for r in v["rows"][1:]]
    lines += markdown_table(["shift", "severity", "level", *METRICS[:-1], "notumor ok"], rows)
    lines += ["", "Levels:", ""] + [f"- `{name}`: {v['unit']}" for name, v in result["shifts"].items()]
    return "\n".join(lines) + "\n"
