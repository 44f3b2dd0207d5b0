"""Memory: peak resident set size of a full-dataset CustomNet training run, default size (target < 3 GiB).

Each repeat is a fresh child process running the real ``train`` path (``run_train``) on the whole data folder
with the default CustomNet config: every image decoded into the uint8 cache, the shuffle buffer filled, then
training, validation after the epoch, saving the best model, predicting the validation split and writing every
metric and plot. To fit the time budget, training stops after ``--steps`` steps of the one epoch
(``--full-epoch`` trains all of it); every allocation that scales with the dataset has happened by then.

The peak comes from the kernel: ``wait4`` returns the child's ``ru_maxrss`` (its highest resident set size),
the same figure ``/usr/bin/time -v`` prints as "Maximum resident set size".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=common.DEFAULT_DATA, help=common.DATA_HELP)
    p.add_argument("--image-size", type=int, default=None, help="default: the CustomNet config's (128)")
    p.add_argument("--steps", type=int, default=10, help="training steps before stopping the epoch")
    p.add_argument("--full-epoch", action="store_true", help="train the whole epoch (slow on 2 cores)")
    p.add_argument("--repeats", type=int, default=2, help="fresh child processes")
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="start no further repeat that would likely end after this (at least one runs)")
    p.add_argument("--per-class", type=int, default=0, help="use only this many images per class (0 = all)")
    p.add_argument("--quick", action="store_true", help="smoke test: 16 images/class, 64 px, 2 steps")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one training, report here
    a = p.parse_args(argv)
    if a.quick:
        a.per_class, a.image_size, a.steps, a.repeats = 16, a.image_size or 64, 2, 1
    return a


def child(args) -> None:
    """One real training run; writes what it did (not its memory: the parent measures that) to --child."""
    common.quiet_tensorflow()
    import keras

    from braintumor.commands.train import run_train
    from braintumor.config import load_config

    class StopAfter(keras.callbacks.Callback):
        def __init__(self, steps: int):
            super().__init__()
            self.steps = steps

        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 >= self.steps:
                self.model.stop_training = True  # Keras ends the epoch here, then still validates

    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    flags = {"data": args.data, "runs_dir": str(tmp / "runs"), "epochs": 1}
    if args.image_size:
        flags["image_size"] = args.image_size
    cfg = load_config(arch="customnet", flags=flags)
    started = time.perf_counter()
    run_dir, metrics = run_train(cfg, callbacks=() if args.full_epoch else (StopAfter(args.steps),))
    meta = json.loads((run_dir / "meta.json").read_text())
    n, size = meta["n_images"], cfg.data.image_size
    common.write_json(args.child, {
        "status": meta["status"], "images": n, "image_size": size, "n_train": meta["n_train"],
        "n_val": meta["n_val"], "batch_size": cfg.train.batch_size,
        "seconds": round(time.perf_counter() - started, 1),
        "uint8_cache_mib": round(n * size * size * 3 / 2**20, 1),
        "float32_cache_mib": round(n * size * size * 3 * 4 / 2**20, 1), "val_accuracy": metrics["accuracy"]})


def one_run(args, data: str) -> dict:
    """Start a child training run, wait for it with wait4 and return its report plus its peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "child.json"
        cmd = [sys.executable, __file__, "--child", str(report), "--data", data, "--steps", str(args.steps)]
        cmd += ["--image-size", str(args.image_size)] if args.image_size else []
        cmd += ["--full-epoch"] if args.full_epoch else []
        proc = subprocess.Popen(cmd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
        if proc.returncode != 0 or not report.is_file():
            raise SystemExit(f"error: the training child failed with exit code {proc.returncode}")
        out = json.loads(report.read_text())
    out["peak_rss_gib"] = round(usage.ru_maxrss / 2**20, 3)  # Linux reports ru_maxrss in KiB
    return out


def main(argv=None) -> dict:
    args = parse(argv)
    if args.child:
        child(args)
        return {}
    data = str(common.check_data(args.data))
    if args.per_class:
        data = str(common.subset_folder(data, args.per_class, tempfile.mkdtemp(prefix="bench-data-")))
    started, runs = time.perf_counter(), []
    for i in range(args.repeats):
        elapsed = time.perf_counter() - started
        if runs and args.budget_seconds and elapsed * (i + 1) / i > args.budget_seconds:
            common.log(f"stopping after {i} repeat(s): another would end past {args.budget_seconds:.0f}s")
            break
        runs.append(one_run(args, data))
        common.log(f"repeat {i + 1}/{args.repeats}: peak RSS {runs[-1]['peak_rss_gib']:.2f} GiB "
                   f"({runs[-1]['images']} images at {runs[-1]['image_size']}px, {runs[-1]['seconds']}s)")
    common.quiet_tensorflow()
    out = {"benchmark": "memory", "machine": common.machine(), "data": args.data, "runs": runs,
           "peak_rss_gib": common.summary([r["peak_rss_gib"] for r in runs]),
           "steps": None if args.full_epoch else args.steps, "full_epoch": args.full_epoch,
           "quick": args.quick,
           "seconds": round(time.perf_counter() - started, 1)}
    if args.out:
        common.write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
