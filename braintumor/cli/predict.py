"""`braintumor predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..runs import resolve_run
from .app import command
from .common import Name, NotumorDoubt, RunsDir, console, print_run_dir, print_skipped
from .progress import RichReporter, make_progress

STATUS_STYLE = {"ok": "green", "uncertain": "yellow", "out_of_distribution": "red"}
SHOWN = 40  # rows printed; predictions.csv has all of them


@command("predict")
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images (searched recursively).",
                                                  show_default=False)],
    run: Annotated[str, typer.Option("--run", "-r", help="A train run, a kfold run (its fold models' ensemble), "
                                                          "or 'latest'.")] = "latest",
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="Average over horizontal flips "
                                                "(default: the run's eval.tta).")] = None,
    notumor_doubt: NotumorDoubt = None,
    name: Name = None,
    runs_dir: RunsDir = None,
) -> None:
    """Classify unlabelled scans; writes runs/predict/<timestamp>-<arch>/predictions.csv.

    Each image gets a status: ok (the class is the answer), uncertain (a brain MRI the model is unsure about: low
    calibrated confidence) or out_of_distribution (not a brain MRI slice it can read); only ok rows name a class.
    A scanner volume (NIfTI file, multi-frame DICOM, DICOM series folder) also gets one answer in volumes.csv: the
    mean of its slices the gate accepted.
    Example: braintumor predict scans/ --run runs/kfold/20260101-120000-customnet
    """
    from ..commands.predict import run_predict  # lazy: loads TensorFlow; --help stays fast

    runs_root = runs_dir or Path("runs")
    run_dir = resolve_run(None if run == "latest" else run, runs_root)
    sources = [str(p) for p in images]
    with make_progress() as progress:
        report = run_predict(run_dir, sources, runs_dir=runs_root, name=name, tta=tta,
                             notumor_doubt=notumor_doubt, reporter=RichReporter(progress))
    console.print(_table(report, run_dir.name))
    if any(v.n_slices > 1 for v in report.volumes):
        console.print(_volume_table(report))
    if not report.has_gate:
        console.print("[yellow]this run has no out-of-distribution gate[/] (trained before it existed): every "
                      "image is answered; retrain to get one", highlight=False)
    print_skipped(report.skipped, report.out_dir)
    print_run_dir(report.out_dir)


def _table(report, source: str) -> Table:
    counts = {s: sum(v.status == s for _, v in report.rows) for s in STATUS_STYLE}
    title = (f"{source}: {len(report.rows)} images, " + ", ".join(f"{s} {n}" for s, n in counts.items())
             + (f" (first {SHOWN} shown)" if len(report.rows) > SHOWN else ""))
    t = Table(title=title, header_style="bold")
    for col, justify in (("image", "left"), ("status", "left"), ("class", "left"), ("p", "right"),
                         ("reason", "left")):
        t.add_column(col, justify=justify)
    for path, v in report.rows[:SHOWN]:
        top = int(v.probs.argmax())
        style = STATUS_STYLE[v.status]
        t.add_row(Path(path).name, f"[{style}]{v.status}[/]", report.class_names[top] if v.answered else "-",
                  f"{v.probs[top]:.3f}", v.reason)
    return t


def _volume_table(report) -> Table:
    vols = report.volumes
    t = Table(title=f"{len(vols)} volumes: the mean of the slices the gate accepted (volumes.csv)"
              + (f" (first {SHOWN} shown)" if len(vols) > SHOWN else ""), header_style="bold")
    for col, justify in (("volume", "left"), ("slices", "right"), ("used", "right"), ("status", "left"),
                         ("class", "left"), ("p", "right"), ("reason", "left")):
        t.add_column(col, justify=justify)
    for v in vols[:SHOWN]:
        top = int(v.probs.argmax())
        t.add_row(Path(v.volume).name, str(v.n_slices), str(v.n_used), f"[{STATUS_STYLE[v.status]}]{v.status}[/]",
                  report.class_names[top] if v.answered else "-", f"{v.probs[top]:.3f}", v.reason)
    return t
