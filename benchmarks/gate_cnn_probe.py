"""Probe: a small pixel-space "brain MRI or not" CNN, trained apart from the classifier, against the gate's head on
the pooled classifier features (issue 21; benchmarks/ood.md). Not wired into the toolkit: this measures whether
the lever is worth it.

    python benchmarks/ood_candidates.py RUN SETS --cache CACHE        # writes CACHE (the decoded sets)
    python benchmarks/gate_cnn_probe.py RUN CACHE [--extra-pos DIR] [--extra-neg DIR] [--seed 0]

Positives: the run's training images and shifted copies (engine/gate_fit.shifted_positives, the head's own);
negatives: nonbrain.negatives drawn at the run's size (the head's own kinds), 3,000. Optional extra folders
(e.g. benchmarks/synth_brains.py --kind mri / ct) join either side, read as uploads are. Threshold: each
training source keeps 98% of its validation images.
Prints % refused per set, as ood_candidates' tables.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import keras  # noqa: E402

from braintumor.data import find_images, map_images  # noqa: E402
from braintumor.engine.gate_fit import negative_images, shifted_positives  # noqa: E402
from braintumor.images import ImageSpec  # noqa: E402
from braintumor.models.loading import load_run  # noqa: E402


def network(size: int, channels: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((size, size, channels))
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.RandomFlip("horizontal")(x)
    x = keras.layers.RandomTranslation(0.05, 0.05)(x)
    for filters in (16, 32, 64, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.LeakyReLU(0.1)(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1)(x)
    return keras.Model(inp, out)


def folder_images(folder: Path, spec: ImageSpec) -> np.ndarray:
    return np.stack([r[0] for r in map_images(find_images([folder]), spec.read) if not isinstance(r, str)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("cache", type=Path)
    ap.add_argument("--extra-pos", type=Path)
    ap.add_argument("--extra-neg", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=8)
    a = ap.parse_args()
    cfg = load_run(a.run, with_model=False).config
    spec = ImageSpec.of(cfg.data)
    data = pickle.loads(a.cache.read_bytes())
    rng = np.random.default_rng(a.seed)
    train = data["train"]["images"]
    pos = [train, shifted_positives(train, rng)]
    neg = [negative_images(spec, 3000, seed=a.seed)]
    if a.extra_pos:
        pos.append(folder_images(a.extra_pos, spec))
    if a.extra_neg:
        neg.append(folder_images(a.extra_neg, spec))
    x = np.concatenate(pos + neg).astype(np.float32)
    n_pos = sum(len(p) for p in pos)
    y = np.r_[np.zeros(n_pos), np.ones(len(x) - n_pos)].astype(np.float32)
    net = network(spec.size, x.shape[-1], a.seed)
    net.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(from_logits=True))
    weights = {0: len(y) / (2 * n_pos), 1: len(y) / (2 * (len(y) - n_pos))}
    net.fit(x, y, batch_size=64, epochs=a.epochs, class_weight=weights, shuffle=True, verbose=2)
    score = lambda imgs: net.predict(imgs.astype(np.float32), batch_size=256, verbose=0)[:, 0]  # noqa: E731
    val = data["val"]
    s_val = score(val["images"])
    threshold = max(np.quantile(s_val[val["sources"] == k], 0.98) for k in np.unique(val["sources"]))
    print(f"positives {n_pos}, negatives {len(x) - n_pos}, threshold {threshold:.3f}")
    print("| set | n | refused % |\n|---|---|---|")
    for k, s in data.items():
        if k == "train":
            continue
        print(f"| {k} | {len(s['images'])} | {100 * np.mean(score(s['images']) > threshold):.1f} |")


if __name__ == "__main__":
    main()
