"""``cam --boxes``: score where a run's heatmaps look against annotated tumour regions, beside a centre prior.

Writes into a cam run directory: localisation.csv (per image), localisation.json and localisation.md (overall, per
class, the centre prior on the same images, accuracy on them, the annotation problems), and
gallery_localisation.png (the worst cases first, the annotated region outlined on the scan at its own resolution).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import plots, runs
from ..data import decode, find_class
from ..errors import ConfigError, DataError
from ..explain.gradcam import explain, explainer
from ..explain.localisation import (
    PRIOR_SIGMA,
    TOLERANCE,
    Annotations,
    Region,
    Score,
    centre_prior,
    read_boxes_csv,
    read_masks,
    read_yolo_folder,
    score,
    summarise,
)
from ..explain.render import draw_region, native_view, overlay
from ..groups import path_groups
from ..models.loading import LoadedRun
from ..plots import figure_png
from ..progress import Reporter
from .evaluate import read_split

GALLERY = 16  # worst cases drawn


@dataclass
class Scored:
    """One annotated image: its scores, the prior's, and what the model said."""

    path: str
    true: str
    predicted: str
    probability: float
    model: Score
    prior: Score


@dataclass
class LocalisationReport:
    out_dir: Path
    method: str
    layers: list[str]
    rows: list[Scored] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    groups_spec: str | None = None  # data.groups: the patients the intervals resample
    trained_on: frozenset[str] = frozenset()  # resolved paths of the run's training images (its split.csv)


def training_paths(run_dir: Path) -> frozenset[str]:
    """The resolved paths on the training side of a run's split.csv (none when it has no split.csv): maps scored
    on images the model trained on, with their boxes under guidance, say little about images it has not seen."""
    if not (Path(run_dir) / "split.csv").is_file():
        return frozenset()
    paths, _, _ = read_split(Path(run_dir), "train")
    return frozenset(str(Path(p).resolve()) for p in paths)


def read_annotations(boxes: str | Path, images: Sequence[str | Path], class_names: Sequence[str]) -> Annotations:
    """The three annotation forms: a CSV of boxes, a folder of YOLO label files, or a folder of mask PNGs."""
    boxes = Path(boxes)
    folder = Path(images[0]) if images else None
    if boxes.is_file() and boxes.suffix.lower() == ".csv":
        return read_boxes_csv(boxes, folder if folder and folder.is_dir() else None)
    if not boxes.is_dir():
        raise ConfigError(f"--boxes {boxes}: expected a CSV (path,class,x_center,y_center,width,height), a folder "
                          "of YOLO label files (<image stem>.txt) or a folder of mask PNGs")
    if folder is None or not folder.is_dir():
        raise ConfigError(f"--boxes {boxes} is a folder of labels or masks: pass the folder of images they "
                          "belong to as the argument, e.g. braintumor cam IMAGES_DIR --boxes LABELS_DIR")
    if any(boxes.glob("*.txt")):
        return read_yolo_folder(boxes, folder, class_names)
    return read_masks(folder, boxes if boxes.resolve() != folder.resolve() else None)


def true_class(path: str, region: Region, class_names: Sequence[str]) -> int | None:
    """The annotated class (or the image's folder name, for masks), as the model's class index."""
    for name in (region.label, Path(path).parent.name):
        if name:
            index = find_class(name, class_names)
            if index is not None:
                return index
    return None


def run_localisation(run: LoadedRun, out: Path, annotations: Annotations, method: str, layers: list[str],
                     explain_true: bool = True, reporter: Reporter | None = None) -> LocalisationReport:
    """Explain every annotated image (its true class, or the predicted one) and score the map and the prior."""
    for name in layers:
        explainer(run.model, name)  # a wrong --layer fails here, listing the valid names
    report = LocalisationReport(out, method, layers, problems=list(annotations.problems),
                                groups_spec=run.config.data.groups, trained_on=training_paths(run.path))
    classes = run.class_names
    worst: list[tuple[float, str, np.ndarray, np.ndarray, str, bool]] = []
    for path, region in sorted(annotations.regions.items()):
        truth = true_class(path, region, classes)
        if truth is None:
            report.problems.append((path, f"class {region.label!r} is none of the model's ({', '.join(classes)})"))
            continue
        try:
            img = decode(path)
        except DataError as e:
            report.problems.append((path, str(e)))
            continue
        array, box = run.spec.prepare(img)
        e = explain(run.model, array, truth if explain_true else None, layers, method)
        rgb, heat = native_view(img, box, e.heatmap, max_side=max(img.size))  # scored at the image's resolution
        h, w = heat.shape
        row = Scored(path, classes[truth], classes[e.predicted], float(e.probs[e.predicted]), score(heat, region),
                     score(centre_prior(h, w), region))
        report.rows.append(row)
        worst.append((row.model.energy, path, rgb, heat, _caption(row), row.model.pointing_tol >= 0.5))
        worst = sorted(worst, key=lambda t: t[0])[:GALLERY]  # keep memory flat on long folders
        if reporter is not None:
            reporter.advance()
    if not report.rows:
        raise DataError(f"none of the {len(annotations.regions)} annotated images could be scored; the problems "
                        f"are in {out / 'localisation_problems.txt'}")
    report.summary = summary(report, explain_true)
    write_localisation(report, annotations, worst)
    return report


def _caption(r: Scored) -> str:
    hit = "peak near box" if r.model.pointing_tol >= 0.5 else "peak MISSES"
    return f"{Path(r.path).name}: {hit}\nenergy {r.model.energy:.1f}, {r.true} -> {r.predicted}"


def summary(report: LocalisationReport, explain_true: bool) -> dict[str, Any]:
    """localisation.json: overall and per-class figures for the model and the centre prior."""
    # the intervals resample patients (the run's data.groups) and volumes, not single slices
    spec = getattr(report, "groups_spec", None)
    groups, unit = path_groups(spec, [r.path for r in report.rows])
    by_path = dict(zip([r.path for r in report.rows], groups))

    def block(rows: list[Scored]) -> dict[str, Any]:
        g = [by_path[r.path] for r in rows]
        return {"model": summarise([r.model for r in rows], g, unit), "prior": summarise([r.prior for r in rows]),
                "accuracy": float(np.mean([r.true == r.predicted for r in rows])) if rows else None}

    per_class = {c: block([r for r in report.rows if r.true == c]) for c in sorted({r.true for r in report.rows})}
    trained = getattr(report, "trained_on", frozenset())
    seen = [r for r in report.rows if str(Path(r.path).resolve()) in trained]
    out = {"method": report.method, "layers": report.layers,
           "explained": "true class" if explain_true else "predicted class",
           "tolerance": TOLERANCE, "prior_sigma": PRIOR_SIGMA, **block(report.rows), "per_class": per_class,
           "problems": len(report.problems), "training_images": len(seen)}
    if seen and len(seen) < len(report.rows):  # the figure to quote: the images the run did not train on
        out["unseen"] = block([r for r in report.rows if str(Path(r.path).resolve()) not in trained])
    return out


def write_localisation(report: LocalisationReport, annotations: Annotations, worst: list) -> None:
    out = report.out_dir
    runs.write_csv(out / "localisation.csv",
                   ["image", "true", "predicted", "probability", "pointing", "pointing_tol", "energy",
                    "prior_pointing", "prior_pointing_tol", "prior_energy"],
                   ([r.path, r.true, r.predicted, f"{r.probability:.6f}", f"{r.model.pointing:g}",
                     f"{r.model.pointing_tol:g}", f"{r.model.energy:.4f}", f"{r.prior.pointing:g}",
                     f"{r.prior.pointing_tol:g}", f"{r.prior.energy:.4f}"] for r in report.rows))
    runs.atomic_write_json(out / "localisation.json", report.summary)
    runs.atomic_write_text(out / "localisation.md", localisation_markdown(report))
    if report.problems:
        runs.atomic_write_text(out / "localisation_problems.txt",
                               "".join(f"{where}\t{why}\n" for where, why in report.problems))
    tiles = []
    for _, path, rgb, heat, caption, hit in worst:
        mask = annotations.regions[path].mask(*heat.shape)
        tiles.append((draw_region(overlay(rgb, heat), mask), caption, hit))
    rows = [tiles[i:i + 4] for i in range(0, len(tiles), 4)]
    fig = plots.image_grid_figure(rows, [f"worst {i * 4 + 1}-{i * 4 + len(r)}" for i, r in enumerate(rows)],
                                  f"{_label(report)}: the {len(tiles)} lowest energy ratios (green box: the "
                                  "annotation; frame: green = peak within the tolerance, red = not)")
    runs.atomic_write_bytes(out / "gallery_localisation.png", figure_png(fig))


def _label(report: LocalisationReport) -> str:
    name = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "layercam": "LayerCAM"}[report.method]
    return f"{name} at {'+'.join(report.layers)}"


def _ci(m: dict[str, Any]) -> str:
    """' (95% CI 0.91-0.97, resampling 46 patients)' beside the tolerant pointing."""
    lo, hi = m.get("pointing_tol_ci95", (float("nan"),) * 2)
    return "" if lo != lo else f" (95% CI {lo:.3f}-{hi:.3f}, {m['interval']['text']})"


def localisation_markdown(report: LocalisationReport) -> str:
    s = report.summary
    rows = [["all", s["model"]["n"], s["accuracy"], s["model"], s["prior"]]]
    if "unseen" in s:
        u = s["unseen"]
        rows.append(["not trained on", u["model"]["n"], u["accuracy"], u["model"], u["prior"]])
    rows += [[c, v["model"]["n"], v["accuracy"], v["model"], v["prior"]] for c, v in s["per_class"].items()]
    table = [[name, n, f"{acc:.4f}", f"{m['pointing']:.3f}", f"{m['pointing_tol']:.3f}{_ci(m)}",
              f"{m['energy']:.2f}", f"{p['pointing_tol']:.3f}", f"{p['energy']:.2f}"] for name, n, acc, m, p in rows]
    beats = s["model"]["pointing_tol"] > s["prior"]["pointing_tol"] and s["model"]["energy"] > s["prior"]["energy"]
    lines = [
        f"# Where the model looks: {_label(report)}, {s['explained']}", "",
        f"Pointing game: is the heatmap's peak inside the annotated region (exact), or inside it grown by "
        f"{s['tolerance']:g} of the image side on every side (tolerant). Energy ratio: the heatmap's share of mass "
        f"inside the region over the region's share of the image (1 = an even spread). The centre prior is a "
        f"Gaussian at the image centre with sigma {s['prior_sigma']:g} of the side: it never looks at the image.",
        "",
        *runs.markdown_table(["images", "n", "accuracy", "pointing", "pointing (tolerant)", "energy ratio",
                              "prior pointing (tolerant)", "prior energy"], table),
        "",
        ("The model beats the centre prior on both." if beats else
         "**The model does not beat the centre prior on both figures**: its maps are no better evidence of "
         "where the tumour is than a fixed blob in the middle of the image."),
    ]
    if s.get("training_images"):
        lines += ["", f"**{s['training_images']} of these {s['model']['n']} images are training images of the run** "
                      "(its split.csv): maps on images the model learned from, with their boxes when it was "
                      "guided, are not evidence of where it looks on new scans. "
                      + ("Quote the 'not trained on' row." if "unseen" in s else
                         "Score annotated images it did not train on.")]
    if report.problems:
        lines += ["", f"{len(report.problems)} annotation rows or files could not be used; see "
                      "localisation_problems.txt."]
    return "\n".join(lines) + "\n"
