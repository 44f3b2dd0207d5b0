"""The ``cam`` command: explain images (or a seeded per-class gallery) into a run directory of panels,
cam.csv and gallery figures. The maps come from explain/ (graph cutting, Grad-CAM, rendering)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import runs
from ..data import decode, find_class, find_images
from ..engine.run import Run
from ..errors import ConfigError, DataError, did_you_mean
from ..explain.gallery import GalleryCell, gallery_picks, method_label, write_gallery
from ..explain.gradcam import METHODS, Explanation, default_explanation, explain, explainer
from ..explain.graph import last_conv_layer
from ..explain.render import native_view, panel_png
from ..models.loading import LoadedRun, load_run
from ..progress import Reporter, or_silent
from ..scanners import split_id
from .localise import LocalisationReport, read_annotations, run_localisation


@dataclass
class CamRow:
    """One explained image, as cam.csv lists it."""

    image: str
    predicted: str
    probability: float
    explained: str
    explained_probability: float
    png: str  # relative to the run directory
    true: str | None = None  # known in --gallery mode

    @property
    def correct(self) -> bool | None:
        return None if self.true is None else self.true == self.predicted


@dataclass
class CamReport:
    out_dir: Path
    layer: str
    method: str
    rows: list[CamRow] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    figures: list[str] = field(default_factory=list)  # gallery grids, relative to out_dir
    localisation: LocalisationReport | None = None  # with --boxes


def class_index_of(name: str, class_names: Sequence[str]) -> int:
    """Index of a class given by name (any spelling data.py recognises); ConfigError naming the valid ones."""
    names = list(class_names)
    index = find_class(name, names)
    if index is not None:
        return index
    hint = did_you_mean(name, names, n=2, cutoff=0.5)
    raise ConfigError(f"unknown class {name!r}{hint}; this model's classes are: {', '.join(names)}")


def _png_name(path: str, taken: set[str], folder: str = "") -> str:
    """``<folder>/<stem>.png``, numbered ``-2``, ``-3``... when two inputs share a stem."""
    file, index = split_id(path)  # a scanner slice id: <file>#<index>
    stem = Path(file).stem.removesuffix(".nii") or "image"
    stem += "" if index is None else f"-slice{index}"
    name, i = f"{folder}{stem}.png", 1
    while name.lower() in taken:
        i += 1
        name = f"{folder}{stem}-{i}.png"
    taken.add(name.lower())
    return name


def _title(image: str, class_names: Sequence[str], e: Explanation, true: str | None = None) -> str:
    pred = class_names[e.predicted]
    line = f"predicted {pred} ({e.probs[e.predicted]:.2f})"
    if e.class_index != e.predicted:
        line += f", explaining {class_names[e.class_index]} ({e.probs[e.class_index]:.2f})"
    if true is not None:
        line += f", true {true}"
    return f"{Path(image).name}: {line}\n{method_label(e.method)} at {e.layer}"


def run_explanation(run: LoadedRun) -> tuple[str | None, tuple[str, ...]]:
    """A run's own explanation choice from its config (eval.cam_method, eval.cam_layers)."""
    return run.config.eval.cam_method, run.config.eval.cam_layers


def resolve_explanation(model, method: str | None, layers: Sequence[str] | None,
                        run_choice: tuple[str | None, Sequence[str]] = (None, ())) -> tuple[str, list[str]]:
    """The method and layers to explain: as given, else the run's choice (``run_choice``: its eval.cam_method and
    eval.cam_layers), else the architecture's default (``default_explanation``). A method given without layers
    explains the last convolutional layer, unless it is the default's method, which keeps the default layers;
    ``layers`` may also hold comma-separated names."""
    wanted = [n.strip() for item in (layers or []) for n in str(item).split(",") if n.strip()]
    if method is not None and method not in METHODS:
        raise ConfigError(f"unknown CAM method {method!r}; use one of: {', '.join(METHODS)}")
    default_method, default_layers = default_explanation(model, *run_choice)
    if wanted:
        chosen = wanted
    elif method is None or method == default_method:
        chosen = default_layers
    else:
        chosen = [last_conv_layer(model)]
    for name in chosen:
        explainer(model, name)  # a wrong --layer fails here, listing the valid names
    return method or default_method, chosen


def run_cam(run_dir: str | Path, images: Sequence[str | Path] = (), *, gallery: str | Path | None = None,
            per_class: int = 4, class_name: str | None = None, layer: str | Sequence[str] | None = None,
            method: str | None = None, seed: int | None = None, runs_dir: str | Path = "runs",
            name: str | None = None, boxes: str | Path | None = None, explain_true: bool = True,
            reporter: Reporter | None = None) -> CamReport:
    """The ``cam`` command: explain images (or a seeded per-class gallery) into runs/cam/<timestamp>-<arch>/.

    Writes one panel PNG per image (named after it; the scan at its own resolution with the heatmap on top),
    cam.csv, skipped.txt for unreadable images and, with ``gallery``, gallery_<class>.png per class plus
    gallery.png. With ``boxes`` (annotations of where the tumour is) it scores the maps instead: see
    ``commands.localise``. ``reporter`` hears a stage "explaining" (its length when known) and each image.
    """
    # 1. everything that can be wrong with the request fails before a run directory exists
    files = find_images(images)
    if images and not files:
        raise DataError(f"no image files in {', '.join(map(str, images))}")
    if boxes is None and bool(files) == (gallery is not None):
        raise ConfigError("pass image files (or folders of images) or --gallery DIR: one of the two")
    run = load_run(run_dir)
    if "ensemble_of" in run.meta:
        raise ConfigError(f"{run_dir} is a k-fold ensemble; Grad-CAM explains one model: pass one of its folds, "
                          f"e.g. --run {Path(run_dir) / run.meta['ensemble_of'][0]}")
    files = find_images(images, run.spec.scan) if files else files  # scanner files: the slices the run keeps
    classes = run.class_names
    explained = None if class_name is None else class_index_of(class_name, classes)
    layers = [layer] if isinstance(layer, str) else layer
    method, layers = resolve_explanation(run.model, method, layers, run_explanation(run))
    annotations = read_annotations(boxes, images, classes) if boxes is not None else None
    reporter = or_silent(reporter)
    if annotations is not None or files:
        reporter.start(len(annotations.regions) if annotations is not None else len(files), "explaining")
    seed = run.config.seed if seed is None else seed
    picks = gallery_picks(gallery, classes, run.config.data.classes, per_class, seed, run.spec.scan) \
        if gallery else None

    # 2. a run directory that says what was asked
    made = Run.create(runs_dir, "cam", run.config.model.arch, name, cfg=run.config, source_run=str(run.path),
                      method=method, layer="+".join(layers), boxes=None if boxes is None else str(boxes),
                      explained_class=None if explained is None else classes[explained],
                      images=None if gallery else [str(p) for p in images],
                      gallery=None if gallery is None else str(gallery), per_class=per_class if gallery else None)
    out = made.path
    report = CamReport(out, "+".join(layers), method)
    with made.marking():
        if annotations is not None:  # score the maps against the annotations; no panel per image
            report.localisation = run_localisation(run, out, annotations, method, layers, explain_true, reporter)
            runs.write_meta(out, n=len(report.localisation.rows), problems=len(report.localisation.problems))
            return report
        # 3. one panel PNG per image; unreadable images are listed and skipped
        todo = [(p, None) for p in files] if picks is None else _gallery_todo(picks)
        cells = _explain_all(run, todo, explained, layers, method, per_class, report, reporter)
        # 4. the table, the skipped list and the gallery figures
        write_cam_csv(out / "cam.csv", report.rows)
        runs.write_skipped(out, report.skipped)
        if picks is not None:
            report.figures = write_gallery(out, cells, classes, method, report.layer)
        runs.write_meta(out, n=len(report.rows), skipped=len(report.skipped))
        if not report.rows:
            raise DataError(f"none of the {len(report.skipped)} images could be read; see {out / 'skipped.txt'}")
    return report


def _gallery_todo(picks: dict[int, list[str]]) -> list[tuple[str, int]]:
    return [(p, c) for c, paths in sorted(picks.items()) for p in paths]


def _explain_all(run, todo: list[tuple[str, int | None]], explained: int | None, layers: list[str], method: str,
                 per_class: int, report: CamReport, reporter: Reporter) -> list[GalleryCell]:
    """Explain each (path, true class or None) and write its panel; gallery classes stop at ``per_class``."""
    classes = run.class_names
    taken: set[str] = set()
    cells: list[GalleryCell] = []
    done = dict.fromkeys(range(len(classes)), 0)
    for path, true in todo:
        if true is not None and done[true] >= per_class:
            continue  # the seeded order is longer than needed, so an unreadable pick is replaced
        try:
            img = decode(path, scan_options=run.spec.scan)
        except DataError as err:
            report.skipped.append((path, str(err)))
            continue
        array, box = run.spec.prepare(img)  # exactly the training preprocessing
        e = explain(run.model, array, explained, layers, method)
        shown, heat = native_view(img, box, e.heatmap)  # the scan as it came, not the model's input
        true_name = None if true is None else classes[true]
        png = _png_name(path, taken, "" if true is None else f"{true_name}/")
        title = _title(path, classes, e, true_name)
        runs.atomic_write_bytes(report.out_dir / png, panel_png(shown, heat, title))
        report.rows.append(CamRow(path, classes[e.predicted], float(e.probs[e.predicted]),
                                  classes[e.class_index], float(e.probs[e.class_index]), png, true_name))
        if true is not None:
            done[true] += 1
            cells.append((true, path, shown, replace(e, heatmap=heat)))
        reporter.advance()
    return cells


def write_cam_csv(path: Path, rows: Sequence[CamRow]) -> None:
    """cam.csv: image, predicted, probability, explained, explained_probability, true, correct, png."""
    runs.write_csv(path, ["image", "predicted", "probability", "explained", "explained_probability", "true",
                     "correct", "png"],
              ([r.image, r.predicted, f"{r.probability:.6f}", r.explained, f"{r.explained_probability:.6f}",
                r.true or "", "" if r.correct is None else str(r.correct).lower(), r.png] for r in rows))
