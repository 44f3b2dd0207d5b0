"""`braintumor cam`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..runs import resolve_run
from .app import command
from .common import Name, RunsDir, console, err_console, print_run_dir, print_skipped
from .progress import RichReporter, make_progress


@command("cam")
def cam(
    images: Annotated[list[Path] | None, typer.Argument(help="Image files or folders of images to explain.",
                                                           show_default=False)] = None,
    run: Annotated[str, typer.Option("--run", "-r", help="A train run directory, or 'latest'.")] = "latest",
    class_: Annotated[str | None, typer.Option("--class", help="Explain this class instead of the predicted "
                                                  "one, e.g. pituitary.")] = None,
    layer: Annotated[list[str] | None, typer.Option("--layer", help="Layer to explain; repeat it (or separate "
                                                       "names by commas) to fuse several maps by their maximum. "
                                                       "Default: the architecture's choice (CustomNet: LayerCAM "
                                                       "over its block ends; others: the last convolutional "
                                                       "layer).")] = None,
    method: Annotated[str | None, typer.Option("--method", "-m", help="gradcam, gradcam++ or layercam "
                                                  "(default: the architecture's choice).")] = None,
    boxes: Annotated[Path | None, typer.Option("--boxes", help="Where the tumours are: a CSV path,class,"
                                               "x_center,y_center,width,height (fractions, YOLO style), a folder "
                                               "of YOLO label files, or a folder of mask PNGs; scores the maps "
                                               "(pointing game, energy ratio) beside a centre prior.")] = None,
    explain_: Annotated[str, typer.Option("--explain", help="With --boxes: explain the true class or the "
                                                           "predicted one.")] = "true",
    gallery: Annotated[Path | None, typer.Option("--gallery", help="Folder of class sub-folders: explain "
                                                 "a seeded pick per class; one grid per class plus an "
                                                 "overview.")] = None,
    per_class: Annotated[int, typer.Option("--per-class", help="Images per class in --gallery mode.")] = 4,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the --gallery pick (default: the run's "
                                                "seed).")] = None,
    name: Name = None,
    runs_dir: RunsDir = None,
) -> None:
    """Class activation maps; writes runs/cam/<timestamp>-<arch>/ with a panel PNG per image and cam.csv, or
    with --boxes the localisation scores (localisation.md, .json, .csv and a gallery of the worst cases).

    Examples: braintumor cam scan.png --class pituitary;
    braintumor cam --gallery data/Testing --per-class 4 --run runs/train/20260101-120000-customnet;
    braintumor cam --boxes figshare/boxes.csv --run runs/train/20260101-120000-customnet
    """
    from ..commands.cam import run_cam  # lazy: loads TensorFlow; --help stays fast

    runs_root = runs_dir or Path("runs")
    run_dir = resolve_run(None if run == "latest" else run, runs_root)
    sources = [str(p) for p in images or []]
    if explain_ not in ("true", "predicted"):
        raise typer.BadParameter(f"--explain {explain_!r}: use true or predicted")
    with make_progress() as progress:
        report = run_cam(run_dir, sources, gallery=gallery, per_class=per_class,
                         class_name=class_, layer=layer, method=method, seed=seed, runs_dir=runs_root,
                         name=name, boxes=boxes, explain_true=explain_ == "true",
                         reporter=RichReporter(progress, "explaining"))
    if report.localisation is not None:
        console.print(_localisation_table(report.localisation, run_dir.name))
        _localisation_warnings(report.localisation)
        print_run_dir(report.out_dir)
        return
    console.print(_table(report, run_dir.name))
    print_skipped(report.skipped, report.out_dir)
    for figure in report.figures:
        console.print(f"gallery: {report.out_dir / figure}", highlight=False)
    print_run_dir(report.out_dir)


def _localisation_warnings(loc) -> None:
    """Scored images the run trained on (quote the 'not trained on' row), then annotations that were not used."""
    seen = loc.summary.get("training_images", 0)
    if seen:
        err_console.print(f"[yellow]{seen} of the scored images are training images of this run[/] (its "
                          "split.csv): quote the 'not trained on' row", highlight=False, soft_wrap=True)
    for where, why in loc.problems[:20]:
        err_console.print(f"[yellow]not used[/] {where}: {why}", highlight=False, soft_wrap=True)


def _localisation_table(loc, source: str) -> Table:
    s = loc.summary
    t = Table(title=f"where {source} looks ({s['method']} at {'+'.join(s['layers'])}, {s['explained']})",
              header_style="bold")
    for col in ("images", "n", "accuracy", "pointing", "pointing (tol.)", "energy", "prior pointing (tol.)",
                "prior energy"):
        t.add_column(col, justify="left" if col == "images" else "right")
    unseen = [("not trained on", s["unseen"])] if "unseen" in s else []
    for label, b in [("all", s), *unseen, *s["per_class"].items()]:
        m, p = b["model"], b["prior"]
        t.add_row(label, str(m["n"]), f"{b['accuracy']:.3f}", f"{m['pointing']:.3f}", f"{m['pointing_tol']:.3f}",
                  f"{m['energy']:.2f}", f"{p['pointing_tol']:.3f}", f"{p['energy']:.2f}")
    return t


def _table(report, source: str):
    label = {"gradcam++": "Grad-CAM++", "layercam": "LayerCAM"}.get(report.method, "Grad-CAM")
    t = Table(title=f"{label} of {source} at layer {report.layer}", header_style="bold")
    for col, justify in (("image", "left"), ("predicted", "left"), ("p", "right"), ("explained", "left"),
                         ("png", "left")):
        t.add_column(col, justify=justify)
    gallery = any(r.true is not None for r in report.rows)
    if gallery:
        t.add_column("true")
    for r in report.rows:
        pred = r.predicted if r.correct is not False else f"[red]{r.predicted}[/]"
        cells = [Path(r.image).name, pred, f"{r.probability:.3f}", r.explained, r.png]
        t.add_row(*cells, *([r.true] if gallery else []))
    return t
