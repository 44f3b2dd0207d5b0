"""`braintumor train`."""

from __future__ import annotations

import json

from .app import command
from .common import TrainOptions, console, epochs_text, metrics_table, print_run_dir, print_tracking, train_options
from .progress import RichReporter, keras_progress, make_progress


@command("train")
@train_options
def train(opts: TrainOptions) -> None:
    """Train one model; writes runs/train/<timestamp>-<arch>/ with model.keras, history, metrics and plots.

    Example: braintumor train --arch customnet --data data/Training --epochs 30 --image-size 128
    """
    cfg = opts.resolve()
    from ..commands.train import run_train  # lazy: loads TensorFlow; --help stays fast
    from ..guidance import counterfactual_on, uses_boxes

    console.print(f"training [bold]{cfg.model.arch}[/] on {', '.join(cfg.data_paths)} at {cfg.data.image_size}px, "
                  f"{epochs_text(cfg)}", highlight=False)
    with make_progress() as progress:
        run_dir, metrics = run_train(cfg, callbacks=(keras_progress(progress, cfg.train.epochs),),
                                     reporter=RichReporter(progress))
    if uses_boxes(cfg):
        meta = json.loads((run_dir / "meta.json").read_text())
        aug = cfg.data.augment
        uses = ([f"guidance weight {cfg.train.guidance:g}"] if cfg.train.guidance > 0 else []) + \
            ([f"counterfactual edits remove {aug.counterfactual_remove:g} / paste {aug.counterfactual_paste:g}"
              + (f" / lesion {aug.counterfactual_lesion:g}" if aug.counterfactual_lesion > 0 else "")]
             if counterfactual_on(cfg) else [])
        console.print(f"annotation guidance: {meta.get('guided_images', 0)} training images had a box "
                      f"(data.boxes); {', '.join(uses)}", highlight=False)
    kept = "best model" if cfg.train.checkpoint == "best" else "last epoch's model"
    console.print(metrics_table(metrics, f"{kept} on the validation split"))
    print_tracking(cfg, run_dir)
    print_run_dir(run_dir)
