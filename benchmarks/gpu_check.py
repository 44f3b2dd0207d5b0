"""GPU check: train each ImageNet architecture from scratch for a few epochs at 224 px; print images/s and
validation accuracy. Run through benchmarks/gpu_check.sh, which checks the GPU and versions first.

The data folder is decoded once; each architecture then goes through the real ``train`` path
(``fit_and_report``: strategy ``auto``, mixed precision ``auto`` = float16 on the GPU, early stopping off so
every epoch runs) into its own run directory. Two throughputs are printed: training steps only (from the
start of an epoch to the start of its validation pass) and the run's own ``train_images_per_second`` (whole
epochs, validation included). Both leave out the first epoch (tracing, warm-up).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import common

IMAGENET_ARCHS = ("resnet50", "mobilenet", "densenet", "efficientnet")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="device_data/Training", help="folder of class sub-folders")
    p.add_argument("--archs", default=",".join(IMAGENET_ARCHS))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64, help="global batch (default %(default)s)")
    p.add_argument("--runs-dir", default=None, help="where the run directories go (default: a temp folder)")
    p.add_argument("--budget-seconds", type=float, default=420,
                   help="start no architecture that would likely end after this (default %(default)s)")
    return p.parse_args(argv)


def train_clock():
    """Seconds of each epoch's training steps: from the epoch's start to the start of its validation."""
    import keras

    class TrainClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self._t = None

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_test_begin(self, logs=None):
            if self._t is not None:
                self.seconds.append(time.perf_counter() - self._t)
                self._t = None

    return TrainClock()


def config_for(args, arch: str, runs_dir: str):
    from braintumor.config import load_config

    flags = {"data": args.data, "image_size": args.image_size, "batch_size": args.batch_size,
             "epochs": args.epochs, "runs_dir": runs_dir, "name": "gpu-check"}
    sets = ["model.weights=none", "model.freeze_backbone_epochs=0",
            f"train.early_stopping_patience={args.epochs}", "eval.bootstrap=200"]
    return load_config(arch=arch, flags=flags, sets=sets)


def train_one(cfg, loaded, groups) -> dict:
    """Exactly what ``run_train`` does, minus decoding the folder again."""
    from braintumor.dedup import multi_member_groups
    from braintumor.engine.trainer import FitParts, fit_and_report
    from braintumor.runs import new_run_dir, read_meta, run_status, start_run, write_meta, write_skipped
    from braintumor.splits import split_train_val, write_split

    run_dir = new_run_dir(cfg.runs_dir, "train", cfg.model.arch, cfg.name)
    start_run(run_dir, cfg, "train")
    clock = train_clock()
    started = time.perf_counter()
    with run_status(run_dir):
        write_skipped(run_dir, loaded.skipped)
        train_idx, val_idx = split_train_val(loaded.labels, groups, cfg.data.val_split, cfg.seed)
        write_split(run_dir, loaded, train_idx, val_idx)
        write_meta(run_dir, n_images=len(loaded.paths), skipped=len(loaded.skipped),
                   duplicate_groups=multi_member_groups(groups))
        metrics = fit_and_report(cfg, run_dir, loaded, FitParts(train_idx, val_idx), callbacks=(clock,))
    meta = read_meta(run_dir)
    steady = clock.seconds[1:] or clock.seconds
    return {"arch": cfg.model.arch, "run": str(run_dir), "epochs": meta.get("epochs_run"),
            "policy": meta.get("dtype_policy"), "replicas": meta.get("replicas"),
            "train_steps_images_per_second": round(meta["n_train"] / statistics.median(steady), 1),
            "epoch_images_per_second": meta.get("train_images_per_second"),
            "val_accuracy": round(metrics["accuracy"], 4), "val_loss": round(metrics["loss"], 4),
            "val_auc": round(metrics["auc"], 4), "seconds": round(time.perf_counter() - started, 1)}


def main(argv=None) -> None:
    common.quiet_tensorflow()
    args = parse(argv)
    import tensorflow as tf

    from braintumor.splits import prepare_data

    started = time.perf_counter()
    m = common.machine()
    print(f"machine: {m['cores']} cores, {m['cpu_model']}; TensorFlow {m['tensorflow']}, Keras {m['keras']}",
          flush=True)
    for gpu in tf.config.list_physical_devices("GPU"):
        print(f"GPU: {gpu.name} {tf.config.experimental.get_device_details(gpu)}", flush=True)
    runs_dir = args.runs_dir or tempfile.mkdtemp(prefix="gpu-check-runs-")
    archs = args.archs.split(",")

    # 1. decode once, as train does (every architecture uses the same size and colour mode)
    loaded, groups = prepare_data(config_for(args, archs[0], runs_dir))
    took = time.perf_counter() - started
    print(f"decoded {len(loaded.paths)} images at {args.image_size}px in {took:.0f}s "
          f"({len(loaded.skipped)} unreadable)", flush=True)

    # 2. one architecture at a time, within the budget
    rows, longest = [], 0.0
    for arch in archs:
        elapsed = time.perf_counter() - started
        if rows and elapsed + longest > args.budget_seconds:
            print(f"skipping {arch}: {elapsed:.0f}s used, the longest run took {longest:.0f}s, "
                  f"budget {args.budget_seconds:.0f}s", flush=True)
            continue
        row = train_one(config_for(args, arch, runs_dir), loaded, groups)
        longest = max(longest, row["seconds"])
        rows.append(row)
        print(f"{arch}: {row}", flush=True)

    # 3. the table
    print("\n| architecture | epochs | policy | train img/s (steps) | img/s (epoch with validation) "
          "| val accuracy | val loss | val AUC | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['epochs']} | {r['policy']} | {r['train_steps_images_per_second']} "
              f"| {r['epoch_images_per_second']} | {r['val_accuracy']} | {r['val_loss']} | {r['val_auc']} "
              f"| {r['seconds']} |")
    print(f"\n{args.epochs} epochs from scratch at {args.image_size}px, global batch {args.batch_size}; "
          f"total {time.perf_counter() - started:.0f}s; runs in {runs_dir}", flush=True)


if __name__ == "__main__":
    main()
