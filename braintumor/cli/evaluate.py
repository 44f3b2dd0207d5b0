"""`braintumor evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..runs import resolve_run
from .app import command
from .common import Name, NotumorDoubt, RunsDir, binary_line, console, metrics_table, per_source_table, print_run_dir


@command("evaluate")
def evaluate(
    run: Annotated[str | None, typer.Argument(
        help="A train run directory; a kfold run directory (the mean of its fold models' probabilities: pass "
        "--data); or 'latest' (the newest complete train run).")] = "latest",
    data: Annotated[list[Path] | None, typer.Option("--data", "-d", help="Folder of class sub-folders to score; "
                                                       "repeat for several collections (NAME=PATH names one), "
                                                       "reported per source beside the total. Default: the "
                                                       "run's own validation split.")] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="Average over horizontal flips "
                                                "(default: the run's eval.tta).")] = None,
    notumor_doubt: NotumorDoubt = None,
    name: Name = None,
    runs_dir: RunsDir = None,
    exclude_duplicates_of: Annotated[Path | None, typer.Option(
        "--exclude-duplicates-of",
        help="A training folder: leave out images that are exact or near copies of its images "
        "(see braintumor eda) and score the rest.")] = None,
    ood: Annotated[Path | None, typer.Option(
        "--ood", help="A folder of images that are not brain MRI: score the out-of-distribution gate on them "
        "against the labelled images (AUROC, refusal rates, accuracy on the accepted), per sub-folder "
        "(out_of_distribution and uncertain apart) and per --data collection.")] = None,
    groups: Annotated[str | None, typer.Option(
        "--groups", help="Where each image's patient is written, as data.groups: PATH.csv:COLUMN or re:PATTERN; "
        "the intervals resample patients (joined with duplicate and volume groups). Default: the run's "
        "data.groups.")] = None,
    binary_label: Annotated[list[str] | None, typer.Option(
        "--binary-label", help="A tumour-or-not folder: FOLDER=tumour or FOLDER=no_tumour (repeatable); yes/no, "
        "tumor/no_tumor, tumour/no_tumour, 1/0 and the class folders are known. Such a collection gets "
        "sensitivity, specificity, missed tumours among accepted answers and AUC. Default: eval.binary_labels.")]
    = None,
) -> None:
    """Score a trained model on a folder; writes runs/evaluate/<timestamp>-<arch>/ (metrics, predictions, plots).

    Example: braintumor evaluate runs/train/20260101-120000-customnet --data data/Testing
    """
    from ..commands.evaluate import run_evaluate  # lazy: loads TensorFlow; --help stays fast

    runs_root = runs_dir or Path("runs")
    run_dir = resolve_run(None if run == "latest" else run, runs_root)
    out, metrics = run_evaluate(run_dir, data, runs_dir=runs_root, name=name, tta=tta,
                                exclude_duplicates_of=exclude_duplicates_of, ood=ood, groups=groups,
                                binary_labels=binary_label or None, notumor_doubt=notumor_doubt)
    print_metrics(metrics, f"{run_dir.name} on {', '.join(map(str, data)) if data else 'its validation split'}")
    print_run_dir(out)


def print_metrics(metrics: dict, title: str) -> None:
    """What evaluate found: left-out copies, the metrics table, tumour-or-not, per source, the gate, per volume
    and the --ood figures, each when the run has it."""
    if "excluded_duplicates" in metrics:
        x = metrics["excluded_duplicates"]
        console.print(f"[bold yellow]left out {x['total']} images[/] that are copies of {x['of']} "
                      f"({x['exact']} exact, {x['near']} near, pHash distance <= {x['near_threshold']}); "
                      f"scored the other {x['kept']}; the list is in excluded.csv", highlight=False)
    if "accuracy" in metrics:  # a tumour-or-not collection has the binary figures alone
        console.print(metrics_table(metrics, title))
    if "binary" in metrics:
        console.print(binary_line(metrics["binary"]), highlight=False)
    if "per_source" in metrics:
        console.print(per_source_table(metrics["per_source"], "per source"))
    g = metrics["gate"]
    accepted = g.get("accuracy_accepted")
    console.print("gate: " + ", ".join(f"{k} {v}" for k, v in g["status_counts"].items())
                  + f"; refused {g['refused']:.1%}" + (f"; accuracy on the accepted {accepted:.4f}" if accepted
                                                         is not None else ""), highlight=False)
    if "volumes" in metrics:
        v = metrics["volumes"]
        recall = ", ".join(f"{c} {r:.2f}" for c, r in v["per_class_recall"].items() if r is not None)
        console.print(f"[bold]per volume[/]: {v['n']} volumes ({v['n_multi_slice']} with several slices), accuracy "
                      f"{v['accuracy']:.4f}; recall {recall}; answered {v['status_counts']['ok']}; see volumes.csv",
                      highlight=False)
    if "ood" in metrics:
        o = metrics["ood"]
        auroc = "n/a (no gate)" if o["auroc"] is None else f"{o['auroc']:.4f}"
        console.print(f"[bold]--ood {o['folder']}[/]: refused {o['refused_ood']:.1%} of {o['n_ood']} images "
                      f"that must be refused and {o['refused_scans']:.1%} of the {o['n_scans']} scans; "
                      f"AUROC {auroc}", highlight=False)
        for name, f in o.get("per_folder", {}).items():
            c, au = f["status_counts"], "n/a" if f["auroc"] is None else f"{f['auroc']:.3f}"
            console.print(f"  {name}: refused {f['refused']:.1%} of {f['n']} (out_of_distribution "
                          f"{c['out_of_distribution']}, uncertain {c['uncertain']}); AUROC {au}", highlight=False)
        for name, a in o.get("per_collection", {}).items():
            console.print(f"  accepted collection {name}: refused {a['refused']:.1%} of {a['n']}", highlight=False)
