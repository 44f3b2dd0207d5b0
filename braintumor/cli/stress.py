"""`braintumor stress`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..runs import resolve_run
from .app import command
from .common import Name, RunsDir, console, print_run_dir
from .progress import RichReporter, make_progress


@command("stress")
def stress(
    run: Annotated[str, typer.Argument(help="A train run, a kfold run (its fold models' ensemble), or 'latest'.")],
    data: Annotated[list[Path], typer.Option("--data", "-d", help="Folder of class sub-folders (labelled images "
                                                "the run never trained on); repeat for several collections "
                                                "(NAME=PATH names one).", show_default=False)],
    shift: Annotated[list[str] | None, typer.Option(
        "--shift", "-s", help="Only this shift (repeatable): invert, remap, gamma, bias_field, noise, blur, "
        "downsample, jpeg, skull_strip, zoom, rotation. Default: all.")] = None,
    per_class: Annotated[int, typer.Option("--per-class", min=0, help="Score a seeded random sample of this many "
                                                                       "images per class (0 = all).")] = 0,
    seed: Annotated[int | None, typer.Option(help="Seed of the shifts' random parts and of --per-class "
                                                  "(default: the run's seed).")] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="Average over horizontal flips "
                                                "(default: the run's eval.tta).")] = None,
    name: Name = None,
    runs_dir: RunsDir = None,
) -> None:
    """Score a trained model on labelled images under controlled shifts at 3-5 severities each.

    Per shift and severity: accuracy, tumour sensitivity and specificity, ECE, the gate's refusals and the share
    of tumour images answered notumor with status ok. Writes runs/stress/<timestamp>-<arch>/ (stress.json,
    stress.md, plots/stress.png).
    Example: braintumor stress latest --data data/Testing --per-class 100
    """
    from ..commands.stress import run_stress  # lazy: loads TensorFlow; --help stays fast

    runs_root = runs_dir or Path("runs")
    run_dir = resolve_run(None if run == "latest" else run, runs_root)
    with make_progress() as progress:
        out, result = run_stress(run_dir, data, runs_dir=runs_root, name=name, tta=tta, only=shift,
                                 per_class=per_class, seed=seed,
                                 reporter=RichReporter(progress))
    console.print(_table(result, run_dir.name))
    print_run_dir(out)


def _table(result: dict, source: str) -> Table:
    """Unchanged, then each shift at its worst severity."""
    t = Table(title=f"{source}: {result['n']} images; each shift at its highest severity (all in stress.md)",
              header_style="bold")
    for col in ("shift", "level", "accuracy", "sensitivity", "specificity", "ECE", "refused", "notumor ok"):
        t.add_column(col, justify="left" if col == "shift" else "right")
    shown = [("unchanged", "", result["unchanged"])]
    shown += [(k, v["rows"][-1]["level"], v["rows"][-1]) for k, v in result["shifts"].items()]
    for label, level, r in shown:
        t.add_row(label, str(level), *("-" if r[m] is None else f"{r[m]:.3f}"
                                       for m in ("accuracy", "sensitivity", "specificity", "ece", "refused",
                                                 "notumor_ok_on_tumour")))
    return t
