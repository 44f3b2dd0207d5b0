"""Options and printing shared by several subcommands."""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..config import FLAG_KEYS, Config, load_config

console = Console()
err_console = Console(stderr=True)

Arch = Annotated[str | None, typer.Option("--arch", "-a", help="Architecture (config stem): customnet, resnet50, "
                                             "mobilenet, densenet, efficientnet.")]
ConfigPath = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config, e.g. a run's config.yaml "
                                                    "to reproduce it, or a recipe such as "
                                                    "configs/recipes/customnet-guided.yaml. Default: "
                                                    "configs/<arch>.yaml.")]
Data = Annotated[list[Path] | None, typer.Option("--data", "-d", help="Folder with one sub-folder per class. "
                                                  "Repeat for several collections (each image keeps its source for "
                                                  "per-source reports); NAME=PATH names one.")]
Epochs = Annotated[int | None, typer.Option("--epochs", help="Maximum epochs (early stopping may end sooner).")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Global batch size.")]
ImageSize = Annotated[int | None, typer.Option("--image-size", help="Square input size in pixels.")]
Seed = Annotated[int | None, typer.Option("--seed", help="Seed for splits, initialisation and augmentation.")]
Weights = Annotated[str | None, typer.Option("--weights", help="imagenet, none, or a weights file path.")]
Name = Annotated[str | None, typer.Option("--name", help="Suffix for the run directory name.")]
RunsDir = Annotated[Path | None, typer.Option("--runs-dir", help="Where run directories go (default: runs).")]
NotumorDoubt = Annotated[float | None, typer.Option(
    "--notumor-doubt", help="Say uncertain, not notumor, when p(tumour) = 1 - p(notumor) is at least this: a "
    "site's operating point (kfold's summary suggests one, set out of fold). Default: the run's "
    "eval.notumor_doubt (null: off).")]
Sets = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override any config key: "
                                                   "--set train.lr=3e-4 (repeatable).")]
Track = Annotated[list[str] | None, typer.Option(
    "--track", help="Experiment tracking (off by default): tensorboard, mlflow; repeatable or a comma list "
    "(--track tensorboard,mlflow). Sets train.track. Needs pip install 'braintumor\\[track]'.")]


# The options train and kfold share: parameter name -> its Typer type. The one list of them.
TRAIN_OPTIONS = {"arch": Arch, "config": ConfigPath, "data": Data, "epochs": Epochs, "batch_size": BatchSize,
                 "image_size": ImageSize, "seed": Seed, "weights": Weights, "name": Name, "runs_dir": RunsDir,
                 "set_": Sets, "track": Track}


@dataclass(frozen=True)
class TrainOptions:
    """The shared options as Typer parsed them (None: not given)."""

    arch: str | None = None
    config: Path | None = None
    data: list[Path] | None = None
    epochs: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    seed: int | None = None
    weights: str | None = None
    name: str | None = None
    runs_dir: Path | None = None
    set_: list[str] | None = None
    track: list[str] | None = None

    def given(self) -> list[str]:
        """The options given, as typed on the command line (``--batch-size``)."""
        return [f"--{f.name.rstrip('_').replace('_', '-')}" for f in fields(self) if getattr(self, f.name)]

    def resolve(self) -> Config:
        """The Config these options ask for, in the documented precedence (config.load_config)."""
        flags = {k: getattr(self, k) for k in FLAG_KEYS if k != "arch"}
        flags = {k: _plain_flag(v) for k, v in flags.items()}
        if self.track is not None:  # --track a --track b, or --track a,b
            flags["track"] = [t.strip() for item in self.track for t in item.split(",") if t.strip()]
        return load_config(arch=self.arch, config_path=self.config, flags=flags, sets=self.set_ or [])


def _plain_flag(value):
    """Paths as text; a repeated option given once as its one value (so config.yaml keeps ``path: DIR``)."""
    if isinstance(value, list):
        value = [_plain_flag(v) for v in value]
        return value[0] if len(value) == 1 else value or None
    return str(value) if isinstance(value, Path) else value


def train_options(fn):
    """Give a Typer command the shared options (listed first in --help); it receives them as ``opts``."""
    hints = typing.get_type_hints(fn, include_extras=True)  # the Annotated options, not their names as strings
    own = [p.replace(annotation=hints[p.name]) for p in inspect.signature(fn).parameters.values()
           if p.name != "opts"]
    shared = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=a)
              for n, a in TRAIN_OPTIONS.items()]

    @functools.wraps(fn)
    def wrapper(**kwargs):
        opts = TrainOptions(**{n: kwargs.pop(n) for n in TRAIN_OPTIONS})
        return fn(opts=opts, **kwargs)

    wrapper.__signature__ = inspect.Signature([*shared, *(p.replace(kind=p.KEYWORD_ONLY) for p in own)])
    return wrapper


def binary_line(b: dict) -> str:
    """Tumour or not in one line: each figure with its 95% interval and the unit it resampled."""
    def fig(name: str, label: str) -> str:
        v, (lo, hi) = b[name], b[f"{name}_ci95"]
        return f"{label} -" if v is None else f"{label} {v:.3f}" + ("" if lo is None else f" ({lo:.3f}-{hi:.3f})")

    figures = [fig("sensitivity", "sensitivity"), fig("specificity", "specificity"),
               fig("missed_accepted", "missed tumours among accepted"), fig("auc", "AUC")]
    line = "[bold]tumour or not[/]: " + ", ".join(figures) + f"; 95% CI {b['interval']['text']}"
    pp = b.get("per_patient")
    if pp and pp["with_tumour"]:
        line += (f"\n[bold]per patient[/]: tumour found in {pp['found']} of {pp['with_tumour']} patients, missed on "
                 f"every slice in {pp['missed']}; their slice sensitivity median {pp['slice_sensitivity_median']:.2f}"
                 f", lowest {pp['slice_sensitivity_lowest']:.2f}")
    return line


def metrics_table(m: dict, title: str) -> Table:
    """A Rich table of the headline metrics and per-class recall."""
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    lo, hi = m["accuracy_ci95"]
    t.add_row("images", str(m["n"]))
    unit = f", {m['interval']['text']}" if m.get("interval") else ""
    t.add_row("accuracy", f"{m['accuracy']:.4f}  (95% CI {lo:.3f}-{hi:.3f}{unit})")
    t.add_row("loss", f"{m['loss']:.4f}")
    t.add_row("AUC (macro, one-vs-rest)", f"{m['auc']:.4f}")
    t.add_row("macro F1", f"{m['macro_f1']:.4f}")
    for c, v in m["per_class"].items():
        t.add_row(f"recall {c}", f"{v['recall']:.4f}  (n={v['support']})")
    return t


def per_source_table(per_source: dict, title: str) -> Table:
    """A Rich table of metrics per source (collection): n, accuracy, AUC, recall per class ('-': no images)."""
    classes = list(next(iter(per_source.values()))["recall"]) if per_source else []
    t = Table(title=title, show_header=True, header_style="bold")
    for col in ("source", "n", "accuracy", "AUC", *[f"recall {c}" for c in classes]):
        t.add_column(col, justify="left" if col == "source" else "right")
    for name, v in per_source.items():
        t.add_row(name, str(v["n"]), f"{v['accuracy']:.4f}", "-" if v["auc"] is None else f"{v['auc']:.4f}",
                  *("-" if v["recall"][c] is None else f"{v['recall'][c]:.4f}" for c in classes))
    return t


SKIPPED_SHOWN = 5  # unreadable files named on the terminal; the rest are counted (all are in skipped.txt)


def print_skipped(skipped: list[tuple[str, str]], out_dir: Path) -> None:
    """The first few unreadable files with their reasons on stderr, then one line counting the rest: a folder of
    broken files must not flood the terminal (skipped.txt in the run directory lists every one)."""
    for path, why in skipped[:SKIPPED_SHOWN]:
        err_console.print(f"[yellow]skipped[/] {path}: {why}", highlight=False, soft_wrap=True)
    if len(skipped) > SKIPPED_SHOWN:
        err_console.print(f"[yellow]skipped[/] {len(skipped) - SKIPPED_SHOWN:,} more unreadable file(s): see "
                          f"{out_dir / 'skipped.txt'}", highlight=False, soft_wrap=True)


def print_run_dir(path: Path) -> None:
    console.print(f"run directory: [bold]{path}[/]", highlight=False, soft_wrap=True)


def print_tracking(cfg, run_dir: Path) -> None:
    """Where train.track's trackers recorded the run (nothing when tracking is off); before print_run_dir, whose
    line stays last for scripts that read it."""
    if not cfg.train.track:
        return
    from ..tracking import describe  # lazy: imports Keras, which the finished run has loaded anyway

    for line in describe(cfg, run_dir):
        console.print(line, highlight=False, soft_wrap=True)


def not_yet(name: str) -> None:
    err_console.print(f"[yellow]braintumor {name} is not built yet[/]")
    raise typer.Exit(2)


def epochs_text(cfg) -> str:
    """'30 epochs' for a fixed schedule, 'up to 30 epochs' when early stopping may end it sooner."""
    n = cfg.train.epochs
    return f"up to {n} epochs" if cfg.train.early_stopping_patience > 0 else f"{n} epochs"
