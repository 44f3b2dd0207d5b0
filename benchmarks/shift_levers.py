"""The shift levers (data.augment remap / invert / skull_strip / bias_field / noise) on real slices: a picture of
each lever forced on (benchmarks/shift_levers.png) and the augmenter's cost per 32-image batch at 64 px, levers off
against configs/recipes/customnet-external.yaml's. Run with `nice -n 10 python benchmarks/shift_levers.py`."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from braintumor.config import AugmentConfig, configs_dir, load_config  # noqa: E402
from braintumor.data import ImageSpec  # noqa: E402
from braintumor.pipeline import augmenter  # noqa: E402

DATA = Path("/work/shared/data")
SAMPLES = ["brain-tumor-mri/Training/glioma", "brain-tumor-mri/Training/notumor",
           "brain-tumor-mri/Training/meningioma", "tcga-lgg-dev/flair/glioma", "tcga-lgg-dev/t1ce/glioma"]
QUIET = dict(flip_horizontal=False, rotation=0.0, zoom=0.0, brightness=0.0, contrast=0.0)
LEVERS = {"as read": {}, "invert": {"invert": 1.0}, "remap rising": {"remap": 1.0, "remap_monotone": 1.0},
          "remap free": {"remap": 1.0, "remap_monotone": 0.0}, "skull strip": {"skull_strip": 1.0},
          "bias field 0.3": {"bias_field": 0.3}, "noise 0.03": {"noise": 0.03}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(Path(__file__).with_name("shift_levers.png")))
    p.add_argument("--size", type=int, default=128, help="picture resolution (the timing uses 64 px)")
    args = p.parse_args()
    spec = ImageSpec(args.size, 1)
    images = np.stack([spec.read(sorted((DATA / s).iterdir())[7])[0] for s in SAMPLES]).astype(np.float32)
    fig, axes = plt.subplots(len(SAMPLES), len(LEVERS), figsize=(2 * len(LEVERS), 2 * len(SAMPLES)))
    for j, (name, levers) in enumerate(LEVERS.items()):
        tf.random.set_seed(3)
        out = augmenter(AugmentConfig(**QUIET, **levers), seed=0)(tf.constant(images)).numpy()
        for i in range(len(SAMPLES)):
            axes[i, j].imshow(out[i, ..., 0], cmap="gray", vmin=0, vmax=255)
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
            axes[0, j].set_title(name, fontsize=9)
            axes[i, 0].set_ylabel(SAMPLES[i].replace("brain-tumor-mri/Training/", "kaggle "), fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")

    recipe = load_config(config_path=configs_dir() / "recipes" / "customnet-external.yaml").data.augment
    base = dataclasses.replace(recipe, remap=0.0, invert=0.0, bias_field=0.0, noise=0.0, skull_strip=0.0)
    batch = tf.constant(np.random.default_rng(0).integers(0, 256, (32, 64, 64, 1)).astype(np.float32))
    for name, cfg in (("levers off", base), ("external recipe", recipe)):
        fn = tf.function(augmenter(cfg, seed=0))
        fn(batch)  # trace
        t = time.perf_counter()
        for _ in range(50):
            fn(batch).numpy()
        print(f"{name}: {(time.perf_counter() - t) / 50 * 1000:.2f} ms per 32-image batch at 64 px")


if __name__ == "__main__":
    main()
