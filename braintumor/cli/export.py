"""`braintumor export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..runs import resolve_run
from .app import command
from .common import Name, NotumorDoubt, RunsDir, console, print_run_dir


@command("export")
def export(
    run: Annotated[str | None, typer.Argument(
        help="A train run directory, a kfold run directory (its ensemble becomes one model), or 'latest'.")
    ] = "latest",
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx (served by braintumor serve --model, no "
                                     "TensorFlow), tflite or savedmodel.")] = "onnx",
    quantize: Annotated[str | None, typer.Option("--quantize", "-q", help="tflite only: float16, or int8 "
                                                 "(calibrated on the run's training images).")] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Folder of class sub-folders to verify on. "
                                              "Default: the run's own validation split.")] = None,
    max_images: Annotated[int, typer.Option("--max-images", help="Verify on at most this many images (a seeded "
                                                  "sample); 0 = all of them.")] = 256,
    notumor_doubt: NotumorDoubt = None,
    name: Name = None,
    runs_dir: RunsDir = None,
) -> None:
    """Export a run's model (probabilities + the gate's features, one graph) and verify it against model.keras on
    real images; writes runs/export/<timestamp>-<arch>-<format>/ with export.json.

    Example: braintumor export runs/train/20260101-120000-customnet --format onnx
    """
    from ..commands.export import run_export  # lazy: loads TensorFlow; --help stays fast

    runs_root = runs_dir or Path("runs")
    run_dir = resolve_run(None if run == "latest" else run, runs_root)
    out, info = run_export(run_dir, fmt, quantize=quantize, data=data, runs_dir=runs_root, name=name,
                           max_images=max_images or 10 ** 9, notumor_doubt=notumor_doubt)
    console.print(export_table(info))
    if not info["meets_targets"]:
        console.print("[bold yellow]the export disagrees with model.keras beyond the targets[/] "
                      f"({info['targets']}); see export.json", highlight=False, soft_wrap=True)
    if fmt == "onnx":
        console.print(f"serve it: braintumor serve --model {out / info['file']}", highlight=False, soft_wrap=True)
    print_run_dir(out)


def export_table(info: dict) -> Table:
    v = info["verification"]
    t = Table(title=f"{info['source_run']} as {info['format']}"
                    f"{' ' + info['quantize'] if info['quantize'] else ''} ({v['on']})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    lat = v["latency_ms"]
    rows = [("file size", f"{info['size_bytes'] / 1024 / 1024:.2f} MiB"),
            ("max |dp| vs model.keras", f"{v['max_abs_prob_diff']:.2e}"),
            ("top-1 agreement", f"{100 * v['top1_agreement']:.2f}%"),
            ("verdict agreement", f"{100 * v['verdict_agreement']:.2f}%")]
    for runtime, m in lat.items():
        rows.append((f"{runtime}: 1 image / batch of {m['batch_size']}",
                     f"{m['single_ms']:.2f} / {m['batch_ms']:.1f} ms"))
    for r in rows:
        t.add_row(*r)
    return t
