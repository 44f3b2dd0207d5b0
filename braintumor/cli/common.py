"""Options and printing shared by several subcommands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..config import load_config

console = Console()
err_console = Console(stderr=True)

Arch = Annotated[str | None, typer.Option("--arch", "-a", help="Architecture (config stem): customnet, resnet50, "
                                             "mobilenet, densenet, efficientnet.")]
ConfigPath = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config, e.g. a run's config.yaml "
                                                    "to reproduce it. Default: configs/<arch>.yaml.")]
Data = Annotated[Path | None, typer.Option("--data", "-d", help="Folder with one sub-folder per class.")]
Epochs = Annotated[int | None, typer.Option("--epochs", help="Maximum epochs (early stopping may end sooner).")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Global batch size.")]
ImageSize = Annotated[int | None, typer.Option("--image-size", help="Square input size in pixels.")]
Seed = Annotated[int | None, typer.Option("--seed", help="Seed for splits, initialisation and augmentation.")]
Weights = Annotated[str | None, typer.Option("--weights", help="imagenet, none, or a weights file path.")]
Name = Annotated[str | None, typer.Option("--name", help="Suffix for the run directory name.")]
RunsDir = Annotated[Path | None, typer.Option("--runs-dir", help="Where run directories go (default: runs).")]
Sets = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override any config key: "
                                                   "--set train.lr=3e-4 (repeatable).")]


def resolve_config(arch, config, data, epochs, batch_size, image_size, seed, weights, name, runs_dir, sets):
    """Config from the shared flags, in the documented precedence."""
    flags = dict(data=str(data) if data else None, epochs=epochs, batch_size=batch_size, image_size=image_size,
                 seed=seed, weights=weights, name=name, runs_dir=str(runs_dir) if runs_dir else None)
    return load_config(arch=arch, config_path=config, flags=flags, sets=sets or [])


def metrics_table(m: dict, title: str) -> Table:
    """A Rich table of the headline metrics and per-class recall."""
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    lo, hi = m["accuracy_ci95"]
    t.add_row("images", str(m["n"]))
    t.add_row("accuracy", f"{m['accuracy']:.4f}  (95% CI {lo:.3f}-{hi:.3f})")
    t.add_row("loss", f"{m['loss']:.4f}")
    t.add_row("AUC (macro, one-vs-rest)", f"{m['auc']:.4f}")
    t.add_row("macro F1", f"{m['macro_f1']:.4f}")
    for c, v in m["per_class"].items():
        t.add_row(f"recall {c}", f"{v['recall']:.4f}  (n={v['support']})")
    return t


def print_run_dir(path: Path) -> None:
    console.print(f"run directory: [bold]{path}[/]", highlight=False, soft_wrap=True)


def not_yet(name: str) -> None:
    err_console.print(f"[yellow]braintumor {name} is not built yet[/]")
    raise typer.Exit(2)


def epochs_text(cfg) -> str:
    """'30 epochs' for a fixed schedule, 'up to 30 epochs' when early stopping may end it sooner."""
    n = cfg.train.epochs
    return f"up to {n} epochs" if cfg.train.early_stopping_patience > 0 else f"{n} epochs"
