"""`braintumor cam`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..data import find_images
from ..runs import resolve_run
from .app import command
from .common import Name, RunsDir, console, err_console, print_run_dir
from .progress import make_progress


@command("cam")
def cam(
    images: Annotated[list[Path] | None, typer.Argument(help="Image files or folders of images to explain.",
                                                           show_default=False)] = None,
    run: Annotated[str, typer.Option("--run", "-r", help="A train run directory, or 'latest'.")] = "latest",
    class_: Annotated[str | None, typer.Option("--class", help="Explain this class instead of the predicted "
                                                  "one, e.g. pituitary.")] = None,
    layer: Annotated[str | None, typer.Option("--layer", help="Layer to explain (default: the last "
                                                 "convolutional layer, found automatically).")] = None,
    method: Annotated[str, typer.Option("--method", "-m", help="gradcam or gradcam++.")] = "gradcam",
    gallery: Annotated[Path | None, typer.Option("--gallery", help="Folder of class sub-folders: explain "
                                                 "a seeded pick per class; one grid per class plus an "
                                                 "overview.")] = None,
    per_class: Annotated[int, typer.Option("--per-class", help="Images per class in --gallery mode.")] = 4,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the --gallery pick (default: the run's "
                                                "seed).")] = None,
    name: Name = None,
    runs_dir: RunsDir = None,
) -> None:
    """Grad-CAM heatmaps; writes runs/cam/<timestamp>-<arch>/ with a panel PNG per image and cam.csv.

    Examples: braintumor cam scan.png --class pituitary;
    braintumor cam --gallery data/Testing --per-class 4 --run runs/train/20260101-120000-customnet
    """
    from ..commands.cam import run_cam  # lazy: loads TensorFlow; --help stays fast

    runs_root = runs_dir or Path("runs")
    run_dir = resolve_run(None if run == "latest" else run, runs_root)
    sources = [str(p) for p in images or []]
    with make_progress() as progress:
        task = progress.add_task("explaining", total=len(find_images(sources)) or None)
        report = run_cam(run_dir, sources, gallery=gallery, per_class=per_class,
                         class_name=class_, layer=layer, method=method, seed=seed, runs_dir=runs_root,
                         name=name, on_image=lambda path: progress.advance(task))
    console.print(_table(report, run_dir.name))
    for path, why in report.skipped:
        err_console.print(f"[yellow]skipped[/] {path}: {why}", highlight=False, soft_wrap=True)
    for figure in report.figures:
        console.print(f"gallery: {report.out_dir / figure}", highlight=False)
    print_run_dir(report.out_dir)


def _table(report, source: str):
    label = "Grad-CAM++" if report.method == "gradcam++" else "Grad-CAM"
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
