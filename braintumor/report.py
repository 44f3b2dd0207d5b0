"""The files that record metrics: metrics.json, metrics.md (headline, per class, per source, calibration, gate,
volumes, tumour or not), the confusion-matrix PNGs and predictions.csv. The numbers come from metrics.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import plots
from .plots import atomic_save_figure
from .runs import atomic_write_json, atomic_write_text, markdown_table, write_csv
from .volumes import volumes_markdown


def per_source_markdown(per_source: dict[str, dict[str, Any]], classes: list[str]) -> list[str]:
    """The per-source table (accuracy, AUC, recall per class); '-' where a source has no image of a class."""
    rows = [[name, v["n"], f"{v['accuracy']:.4f}", "-" if v["auc"] is None else f"{v['auc']:.4f}",
             *("-" if v["recall"][c] is None else f"{v['recall'][c]:.4f}" for c in classes)]
            for name, v in per_source.items()]
    return markdown_table(["source", "n", "accuracy", "AUC (macro OvR)", *[f"recall {c}" for c in classes]], rows)


def metrics_markdown(m: dict[str, Any], title: str = "Metrics") -> str:
    """metrics.md: the headline numbers, per-class precision/recall/F1 and the confusion matrix."""
    if "accuracy" not in m:  # a tumour-or-not collection: the binary figures alone
        return "\n".join([f"# {title}", *binary_markdown(m["binary"], m.get("binary_per_source")),
                          *(_gate_markdown(m["gate"]) if "gate" in m else [])]) + "\n"
    lo, hi = m["accuracy_ci95"]
    headline = [m["n"], f"{m['accuracy']:.4f}", f"{lo:.4f} - {hi:.4f}{ci_unit(m)}", f"{m['loss']:.4f}",
                f"{m['auc']:.4f}",
                f"{m['macro_f1']:.4f}"]
    per_class = [[c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", v["support"]]
                 for c, v in m["per_class"].items()]
    confusion = [[c, *row] for c, row in zip(m["classes"], m["confusion_matrix"])]
    calibration = _calibration_markdown(m["calibration"]) if "calibration" in m else []
    gate = _gate_markdown(m["gate"]) if "gate" in m else []
    sources = ["", "Per source (collection; AUC over the classes each one holds)", "",
               *per_source_markdown(m["per_source"], m["classes"])] if len(m.get("per_source", {})) > 1 else []
    lines = [
        f"# {title}", "",
        *markdown_table(["n", "accuracy", "95% CI", "loss", "AUC (macro OvR)", "macro F1"], [headline]), "",
        *markdown_table(["class", "precision", "recall", "F1", "support"], per_class), "",
        "Confusion matrix (rows: true, columns: predicted)", "",
        *markdown_table(["true \\ predicted", *m["classes"]], confusion),
        *sources, *calibration, *gate,
        *(volumes_markdown(m["volumes"]) if "volumes" in m else []),
        *(binary_markdown(m["binary"], m.get("binary_per_source")) if "binary" in m else []),
    ]
    return "\n".join(lines) + "\n"


def ci_unit(m: dict[str, Any]) -> str:
    """' (resampling 46 patients)' for a metrics dict that records its interval's unit, else ''."""
    info = m.get("interval")
    return f" ({info['text']})" if info else ""


def _calibration_markdown(c: dict[str, Any]) -> list[str]:
    rows = [[when, f"{c[when]['ece']:.4f}", f"{c[when]['brier']:.4f}", f"{c[when]['nll']:.4f}"]
            for when in ("before", "after") if when in c]
    return ["", f"Calibration: temperature {c['temperature']:.3f}, fitted on {c['fitted_on']}; ECE over "
                f"{c['ece_bins']} equal-width confidence bins; 'after' is {c['after_is']}", "",
            *markdown_table(["", "ECE", "Brier", "NLL"], rows)]


def _gate_markdown(g: dict[str, Any]) -> list[str]:
    counts = ", ".join(f"{k} {v}" for k, v in g["status_counts"].items())
    acc = g.get("accuracy_accepted")
    withdrew = g.get("notumor_doubt_withdrew")
    return ["", f"Out-of-distribution gate: {counts}; refused {g['refused']:.4f} of the images"
                + (f"; accuracy on the accepted {acc:.4f}" if acc is not None else "")
                + (f"; {withdrew} of the uncertain are `notumor` answers withdrawn by eval.notumor_doubt"
                   if withdrew else "")]


def write_metrics(out_dir: Path, m: dict[str, Any], title: str = "Metrics") -> None:
    """metrics.json, metrics.md and the two confusion-matrix PNGs under ``out_dir``."""
    atomic_write_json(out_dir / "metrics.json", m)
    atomic_write_text(out_dir / "metrics.md", metrics_markdown(m, title))
    cm = np.asarray(m["confusion_matrix"] if "confusion_matrix" in m else m["binary"]["confusion_matrix"])
    classes = m["classes"] if "confusion_matrix" in m else ["no tumour", "tumour"]
    atomic_save_figure(plots.confusion_matrix_figure(cm, classes), out_dir / "plots" / "confusion_matrix.png")
    atomic_save_figure(plots.confusion_matrix_figure(cm, classes, normalize=True),
                       out_dir / "plots" / "confusion_matrix_normalized.png")


def write_predictions(path: Path, paths: list[str], y_true, probs, class_names, verdicts=None,
                      sources=None) -> None:
    """One row per image: path, true class, predicted class, a probability column per class, given the gate's
    verdicts its status and reason, and given several sources (collections) the image's source."""
    extra = ["status", "reason"] if verdicts is not None else []
    verdicts = verdicts if verdicts is not None else [None] * len(paths)
    several = sources is not None and len(set(sources)) > 1
    names = list(sources) if several else [None] * len(paths)
    write_csv(path, ["path", *(["source"] if several else []), "true", "predicted",
                     *[f"p_{c}" for c in class_names], *extra],
              ([p, *([s] if several else []), class_names[int(t)], class_names[int(np.argmax(row))],
                *[f"{v:.6f}" for v in row], *([verdict.status, verdict.reason] if verdict is not None else [])]
               for p, s, t, row, verdict in zip(paths, names, y_true, probs, verdicts)))


def binary_markdown(b: dict[str, Any], per_source: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """metrics.md's tumour-or-not section: each figure with its interval and the unit it resampled."""
    def cell(name: str, d: dict[str, Any]) -> str:
        v, (lo, hi) = d[name], d[f"{name}_ci95"]
        return "-" if v is None else f"{v:.4f}" + ("" if lo is None else f" ({lo:.4f} - {hi:.4f})")

    names = ["sensitivity", "specificity", "missed_accepted", "auc"]
    heads = ["sensitivity", "specificity", "missed tumours among accepted answers", "AUC (1 - p(notumor))"]
    rows = [["all", b["n"], b["n_tumour"], *(cell(n, b) for n in names)]]
    rows += [[s, d["n"], d["n_tumour"], *(cell(n, d) for n in names)] for s, d in (per_source or {}).items()]
    return ["", f"Tumour or not (tumour: any class but notumor; 95% CI {b['interval']['text']}"
                + (", per source its own" if per_source else "") + ")", "",
            *markdown_table(["images", "n", "tumour", *heads], rows), *patient_markdown(b, per_source)]


def patient_markdown(b: dict[str, Any], per_source: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """The per-patient rows of the tumour-or-not section (metrics.patient_figures), where patients are known."""
    figures = [("all", b.get("per_patient"))] + [(s, d.get("per_patient")) for s, d in (per_source or {}).items()]
    rows = [[name, f["patients"], f"{f['found']} of {f['with_tumour']}", f["missed"],
             "-" if f["slice_sensitivity_median"] is None else f"{f['slice_sensitivity_median']:.2f}",
             "-" if f["slice_sensitivity_lowest"] is None else f"{f['slice_sensitivity_lowest']:.2f}",
             f"{f['raised_an_alarm']} of {f['with_clean_slices']}"] for name, f in figures if f]
    if not rows:
        return []
    return ["", "Per patient (images whose patient data.groups names; found: at least one tumour slice called a "
                "tumour; alarm: at least one clean slice called a tumour)", "",
            *markdown_table(["images", "patients", "tumour patients found", "missed on every slice",
                             "their slice sensitivity, median", "lowest", "patients with clean slices: an alarm"],
                            rows)]
