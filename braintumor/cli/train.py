"""`braintumor train`."""

from __future__ import annotations

from .app import command
from .common import (
    Arch,
    BatchSize,
    ConfigPath,
    Data,
    Epochs,
    ImageSize,
    Name,
    RunsDir,
    Seed,
    Sets,
    Weights,
    console,
    epochs_text,
    metrics_table,
    print_run_dir,
    resolve_config,
)
from .progress import keras_progress, make_progress


@command("train")
def train(arch: Arch = None, config: ConfigPath = None, data: Data = None, epochs: Epochs = None,
          batch_size: BatchSize = None, image_size: ImageSize = None, seed: Seed = None, weights: Weights = None,
          name: Name = None, runs_dir: RunsDir = None, set_: Sets = None) -> None:
    """Train one model; writes runs/train/<timestamp>-<arch>/ with model.keras, history, metrics and plots.

    Example: braintumor train --arch customnet --data data/Training --epochs 30 --image-size 128
    """
    cfg = resolve_config(arch, config, data, epochs, batch_size, image_size, seed, weights, name, runs_dir, set_)
    from ..commands.train import run_train  # lazy: loads TensorFlow; --help stays fast

    console.print(f"training [bold]{cfg.model.arch}[/] on {cfg.data.path} at {cfg.data.image_size}px, "
                  f"{epochs_text(cfg)}", highlight=False)
    with make_progress() as progress:
        run_dir, metrics = run_train(cfg, callbacks=(keras_progress(progress, cfg.train.epochs),))
    kept = "best model" if cfg.train.checkpoint == "best" else "last epoch's model"
    console.print(metrics_table(metrics, f"{kept} on the validation split"))
    print_run_dir(run_dir)
