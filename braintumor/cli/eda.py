"""`braintumor eda`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel
from rich.table import Table

from ..config import DEFAULT_NEAR_THRESHOLD, MAX_NEAR_THRESHOLD
from .app import command
from .common import Name, RunsDir, console, print_run_dir
from .progress import RichReporter, make_progress


@command("eda")
def eda(
    data: Annotated[list[Path], typer.Option(
        "--data", "-d", help="Folder with one sub-folder per class (the training split with --test). Repeat for "
        "several collections (NAME=PATH names one): the report adds class balance and pixel statistics per "
        "source.")],
    test: Annotated[Path | None, typer.Option(
        "--test", "-t", help="A second folder (the test split): copies across the two are leakage.")] = None,
    near_threshold: Annotated[int, typer.Option(
        "--near-threshold", min=0, max=MAX_NEAR_THRESHOLD,
        help="pHash distance (bits of 64) up to which two images count as near copies.",
    )] = DEFAULT_NEAR_THRESHOLD,
    samples: Annotated[int, typer.Option(
        "--samples", min=1, max=20, help="Images per class in samples.png.")] = 6,
    confound_threshold: Annotated[float, typer.Option(
        "--confound-threshold", min=0.01, max=1.0,
        help="Cramer's V (bias-corrected) from which a property (collection, contrast, plane, skull, frame, "
        "head share, colour, size, brightness) is said to predict the class.")] = 0.3,  # confounds.WARN_V
    seed: Annotated[int, typer.Option("--seed", help="Seed for the sample grid and the example pairs.")] = 0,
    name: Name = None,
    runs_dir: RunsDir = None,
) -> None:
    """Report on a dataset: classes, pixel statistics, image properties, confounds, duplicates and leakage.

    Confounds: collection, contrast, plane, skull, frame, head share, colour, size, brightness; warns when one
    predicts the class.

    Writes runs/eda/<timestamp>/ (report.md, summary.json, confounds.md, duplicates.csv and figures).

    Example: braintumor eda --data data/Training --test data/Testing
    """
    with make_progress() as progress:
        from ..commands.eda import run_eda  # lazy: matplotlib (the train extra) stays out of the CLI's start-up

        out, s = run_eda(data if len(data) > 1 else data[0], test, near_threshold=near_threshold,
                         confound_threshold=confound_threshold, runs_dir=runs_dir or Path("runs"), name=name,
                         samples_per_class=samples, seed=seed, reporter=RichReporter(progress))
    print_summary(s)
    print_run_dir(out)


def print_summary(s: dict) -> None:
    """The report's tables, confound warnings, duplicate and leakage notes and the time it took."""
    console.print(summary_table(s))
    if "sources" in s:
        console.print(source_table(s))
    console.print(confound_table(s["confounds"]))
    for w in s["confounds"]["warnings"]:
        console.print(f"[bold yellow]confound:[/] {w}", highlight=False)
    console.print(duplicates_table(s))
    if s["unreadable"]:
        console.print(f"[yellow]{len(s['unreadable'])} unreadable file(s)[/], listed with the reason in "
                      "report.md", highlight=False)
    if s["cross_split_exact"] is not None:
        console.print(leakage_panel(s))
    elif s["near_duplicate_groups"]:
        console.print(f"[yellow]{s['near_duplicate_images']} images sit in {s['near_duplicate_groups']} "
                      "duplicate groups[/]: train and kfold keep each group on one side of every split "
                      "(data.group_duplicates: near, the default, at data.near_threshold: "
                      f"{DEFAULT_NEAR_THRESHOLD}; this report used {s['near_threshold']})",
                      highlight=False)
    if s.get("duplicate_chain"):
        console.print(f"[bold yellow]warning:[/] {s['duplicate_chain']}", highlight=False)
    console.print(f"took {s['duration_s']:.1f} s", highlight=False)


def source_table(s: dict) -> Table:
    """Images per class and mean pixel value per class, for each source (collection)."""
    t = Table(title="per source: images (mean pixel value)", header_style="bold")
    t.add_column("source")
    for c in s["class_names"]:
        t.add_column(c, justify="right")
    t.add_column("copies in other sources", justify="right")
    for name, v in s["sources"].items():
        cells = []
        for c in s["class_names"]:
            mean = v["pixel_mean"][c]["mean"]
            cells.append(f"{v['per_class'][c]} ({'-' if mean is None else round(mean)})")
        t.add_row(name, *cells, str(v.get("copies_in_other_sources", "-")))
    return t


def confound_table(c: dict) -> Table:
    """Per property: Cramer's V with the class and the value whose share differs most between classes."""
    t = Table(title=f"confounds: does the property predict the class? (warning from V >= {c['threshold']})",
              header_style="bold")
    for col in ("property", "V", "largest difference"):
        t.add_column(col, justify="right" if col == "V" else "left")
    for p, row in c["properties"].items():
        cell = row["strongest"]
        v = "-" if row["v"] is None else f"{row['v']:.2f}"
        said = "-" if v == "-" or not cell else (f"{cell['class']}: {cell['share_in_class']:.0%} {cell['value']}, "
                                                 f"others {cell['share_elsewhere']:.0%}")
        t.add_row(f"[bold yellow]{p}[/]" if row["warning"] else p, v, said)
    return t


def summary_table(s: dict) -> Table:
    """Images and class balance per split."""
    names = list(s["images"])
    t = Table(title="dataset", header_style="bold")
    t.add_column("class")
    for n in names:
        t.add_column(n, justify="right")
    for c in s["class_names"]:
        t.add_row(c, *(f"{s['per_class'][n][c]}  ({s['class_share'][n][c]:.0%})" for n in names))
    t.add_row("[bold]images[/]", *(f"[bold]{s['images'][n]}[/]" for n in names))
    t.add_row("imbalance (max/min)", *(_ratio(s["imbalance_ratio"][n]) for n in names))
    t.add_row("unreadable", *(str(sum(u["split"] == n for u in s["unreadable"])) for n in names))
    return t


def duplicates_table(s: dict) -> Table:
    """Duplicate groups within each split, at the threshold and at each reporting distance."""
    names = list(s["images"])
    t = Table(title=f"duplicates (near: pHash distance <= {s['near_threshold']})", header_style="bold")
    t.add_column("")
    for n in names:
        t.add_column(f"within {n}", justify="right")
    if len(names) > 1:
        t.add_column(f"{names[1]} images with a {names[0]} copy", justify="right")
    w = s["within_split"]
    cross = len(names) > 1

    def row(label: str, values: list[str], cross_value: str = "") -> None:
        t.add_row(label, *values, *([cross_value] if cross else []))

    row("exact: groups (images)", [f"{w[n]['exact_groups']} ({w[n]['exact_images']})" for n in names],
        str(s["cross_split_exact"]) if cross else "")
    row("near: groups (images)", [f"{w[n]['near_groups']} ({w[n]['near_images']})" for n in names],
        str(s["cross_split_near"]) if cross else "")
    for d in w[names[0]]["by_distance"]:
        row(f"  distance <= {d}",
            [f"{w[n]['by_distance'][d]['groups']} ({w[n]['by_distance'][d]['images']})" for n in names],
            str(s["cross_split_by_distance"][d]) if cross else "")
    return t


def leakage_panel(s: dict) -> Panel:
    """Red and loud when test images have training copies; green otherwise."""
    n = s["images"]["test"]
    exact, near = s["cross_split_exact"], s["cross_split_near"]
    if not near:
        return Panel(f"no leakage: none of the {n} test images is an exact or near copy of a training image",
                     border_style="green")
    text = (f"[bold]LEAKAGE: {exact} of {n} test images ({exact / n:.1%}) are exact copies of training "
            f"images; {near} ({near / n:.1%}) are within pHash distance {s['near_threshold']}.[/]\n"
            "Test scores on this split overstate accuracy on unseen images. "
            "Evaluate on the de-duplicated test set:\n"
            f"  braintumor evaluate RUN --data {s['splits']['test']} "
            f"--exclude-duplicates-of {s['splits']['train']}")
    return Panel(text, title="[bold]train/test leakage[/]", border_style="bold red", style="red")


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"
