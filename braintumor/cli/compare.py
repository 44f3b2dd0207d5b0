"""`braintumor compare`."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from ..errors import RunError
from .app import command
from .common import Name, RunsDir, console, err_console


class Format(str, Enum):
    table = "table"
    md = "md"
    csv = "csv"


Measure = Annotated[bool, typer.Option(
    "--measure/--no-measure", help="Time a compiled single-image call of each run's model on this machine "
                                   "(median of --repeats) unless the run recorded inference_ms.")]


@command("compare")
def compare(
    runs: Annotated[list[Path] | None, typer.Argument(
        help="Run directories (train, evaluate or kfold; kfold runs use their fold means). "
             "Default: every run under <runs-dir>/train and <runs-dir>/kfold.", show_default=False)] = None,
    sort: Annotated[str | None, typer.Option(
        "--sort", help="Column to sort by, best first: accuracy, auc, loss, macro_f1, inference_ms, params, "
                       "train_seconds, train_images_per_second, ... Default: the order given.")] = None,
    fmt: Annotated[Format, typer.Option(
        "--format", "-f", help="What goes to stdout: a Rich table, Markdown or CSV (the files are always "
                               "written).")] = Format.table,
    measure: Measure = True,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed calls per model.")] = 30,
    name: Name = None,
    runs_dir: RunsDir = None,
) -> None:
    """Compare finished runs side by side; writes runs/compare/<timestamp>/ (comparison.csv, .md, .png).

    Runs with different class sets or evaluated on different images are put in separate cohorts and flagged.
    Folders that are not finished runs are skipped with the reason.

    Example: braintumor compare runs/train/* --sort accuracy --format md > table.md
    """

    root = runs_dir or Path("runs")
    paths = list(runs or [])
    if not paths:
        paths = sorted(p for sub in ("train", "kfold") for p in (root / sub).glob("*") if p.is_dir())
        if not paths:
            raise RunError(f"no runs under {root}/train or {root}/kfold; pass run directories, e.g. "
                           "braintumor compare runs/train/*")
    from ..commands.compare import markdown, run_compare, to_frame  # lazy: pandas and matplotlib (the train
    # extra) stay out of the CLI's start-up, so `braintumor serve --model x.onnx` runs on the slim install

    out, cmp = run_compare(paths, runs_dir=root, sort=sort, measure=measure, repeats=repeats, name=name)

    for path, why in cmp.skipped:
        err_console.print(f"[yellow]skipped[/] {path}: {why}", highlight=False, soft_wrap=True)
    for warning in cmp.warnings:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if fmt is Format.table:
        table, hidden = terminal_table(cmp, console.width)
        console.print(table)
        if hidden:
            console.print(f"[dim]left out to fit the terminal: {', '.join(hidden)} (all are in "
                          "comparison.md and comparison.csv)[/]", highlight=False)
        if len(cmp.cohorts) > 1:
            for letter, what in cmp.cohorts.items():
                console.print(f"cohort {letter}: {what}", highlight=False, soft_wrap=True)
        console.print(f"comparison: [bold]{out}[/]", highlight=False)
    else:

        sys.stdout.write(markdown(cmp) if fmt is Format.md else to_frame(cmp.rows).to_csv(index=False))
        err_console.print(f"comparison: {out}", highlight=False)


# Terminal headers: short, two lines, so the table fits a normal terminal; the files keep the long names.
_HEADERS = {"accuracy (95% CI)": "accuracy\n(95% CI)", "macro-F1": "macro\nF1", "train time": "train\ntime",
            "train img/s": "train\nimg/s", "inference ms": "infer\nms", "epochs": "epo-\nchs"}
# Dropped first, in this order, when the terminal is too narrow for every column.
_OPTIONAL = ("kind", "epochs", "size", "train time", "params", "train img/s", "macro-F1", "loss")


def _width(heads: list[str], rows: list[list[str]]) -> int:
    cols = [[_HEADERS.get(h, h), *[r[i] for r in rows]] for i, h in enumerate(heads)]
    return sum(max(len(line) for cell in col for line in cell.split("\n")) + 3 for col in cols) + 2


def terminal_table(cmp, width: int) -> tuple[Table, list[str]]:
    """The comparison as a compact Rich table (CI under the accuracy) and the columns left out to fit.

    Columns that are the same in every row (kind, cohort) are left out too.
    """

    from ..commands.compare import display_cells  # lazy: see compare()

    cells = [display_cells(r) for r in cmp.rows]
    for c in cells:
        # the interval under the accuracy, the unit it resampled under that ('resampling' said in the files)
        c["accuracy (95% CI)"] = c["accuracy (95% CI)"].replace(" (", "\n(").replace(", resampling ", ",\n")
    heads = [h for h in cells[0] if not (h in ("kind", "cohort") and len({c[h] for c in cells}) == 1)]
    hidden = []
    for h in _OPTIONAL:
        if _width(heads, [[c[k] for k in heads] for c in cells]) <= width:
            break
        if h in heads:
            heads.remove(h)
            hidden.append(h)
    table = Table(title="run comparison", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for h in heads:
        table.add_column(_HEADERS.get(h, h), justify="left" if h in ("run", "kind", "arch") else "right",
                         no_wrap=True)
    for c in cells:
        table.add_row(*[c[h] for h in heads])
    return table, hidden
