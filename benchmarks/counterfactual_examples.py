"""The counterfactual edits (data.augment.counterfactual_remove / counterfactual_paste / counterfactual_lesion,
braintumor/counterfactual.py) on real slices: figshare box slices with their tumour removed, Kaggle notumor slices
given one of those tumours, and the same notumor slices given a synthetic lesion instead (third row; red: its box)
(benchmarks/counterfactual_examples.png), and the augmenter's cost per 32-image batch at 64 px with the edits off and
on. Run with `nice -n 10 python benchmarks/counterfactual_examples.py` (needs /work/shared/data)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from braintumor.config import AugmentConfig  # noqa: E402
from braintumor.data import ImageSpec  # noqa: E402
from braintumor.explain.localisation import read_boxes_csv  # noqa: E402
from braintumor.pipeline import augmenter  # noqa: E402

DATA = Path("/work/shared/data")
CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
CLEAN = CLASSES.index("notumor")
QUIET = dict(flip_horizontal=False, rotation=0.0, zoom=0.0, brightness=0.0, contrast=0.0)
GROW = 0.05  # train.guidance_grow's default: the boxes the edits use are grown like guidance's


def sample(size: int, n: int, seed: int = 3):
    """(images, one-hot labels, masks): n figshare box slices (a mix of classes) and n Kaggle notumor slices."""
    spec, rng = ImageSpec(size, 1), np.random.default_rng(seed)
    ann = read_boxes_csv(DATA / "figshare-tumour-boxes" / "boxes.csv")
    boxed = sorted(ann.regions.items())
    picks = [boxed[i] for i in rng.choice(len(boxed), n, replace=False)]
    clean = sorted((DATA / "brain-tumor-mri/Training/notumor").iterdir())
    clean = [clean[i] for i in rng.choice(len(clean), n, replace=False)]
    images = [spec.read(p)[0] for p, _ in picks] + [spec.read(p)[0] for p in clean]
    labels = [CLASSES.index(Path(p).parent.name) for p, _ in picks] + [CLEAN] * n
    masks = [r.mask(size, size, GROW) for _, r in picks] + [np.ones((size, size), np.uint8)] * n
    return (np.stack(images).astype(np.float32), np.eye(len(CLASSES), dtype=np.float32)[labels],
            np.stack(masks).astype(np.float32)[..., None])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(Path(__file__).with_name("counterfactual_examples.png")))
    p.add_argument("--size", type=int, default=128, help="picture resolution (the timing uses 64 px)")
    p.add_argument("--n", type=int, default=6, help="box slices and clean slices in the picture")
    args = p.parse_args()
    x, y, m = sample(args.size, args.n)
    tf.random.set_seed(0)
    edit = augmenter(AugmentConfig(**QUIET, counterfactual_remove=1.0, counterfactual_paste=1.0), 0, CLEAN)
    ex, _, ey = (t.numpy() for t in edit(tf.constant(x), tf.constant(m), tf.constant(y)))
    draw = augmenter(AugmentConfig(**QUIET, counterfactual_lesion=1.0), 0, CLEAN, CLASSES.index("glioma"))
    lx, lm, ly = (t.numpy() for t in draw(tf.constant(x), tf.constant(m), tf.constant(y)))
    fig, axes = plt.subplots(3, 2 * args.n, figsize=(2 * args.n * 1.6, 3 * 2.0))
    rows = (("as read: ", x, y, None), ("edited: ", ex, ey, None), ("lesion: ", lx, ly, lm))
    for i in range(2 * args.n):
        for row, (what, xs_, ys_, ms_) in enumerate(rows):
            ax = axes[row, i]
            ax.axis("off")
            if row == 2 and i < args.n:
                continue  # the lesions go into clean slices only
            ax.imshow(xs_[i, ..., 0], cmap="gray", vmin=0, vmax=255)
            if ms_ is not None and ms_[i].min() < 0.5:
                ax.contour(ms_[i, ..., 0], [0.5], colors="r", linewidths=0.5)
            ax.set_title(what + CLASSES[int(ys_[i].argmax())], fontsize=7)
    fig.suptitle("counterfactual edits: box slices lose their tumour (left), notumor slices gain one (right) "
                 "or a synthetic lesion (bottom)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    xs, ys, ms = sample(64, 16)
    for name, cfg in (("off", AugmentConfig()),
                      ("on (0.3 / 0.3)", AugmentConfig(counterfactual_remove=0.3, counterfactual_paste=0.3)),
                      ("on with lesions (0.3 / 0.3 / 0.3)", AugmentConfig(
                          counterfactual_remove=0.3, counterfactual_paste=0.3, counterfactual_lesion=0.3))):
        fn = tf.function(augmenter(cfg, 0, CLEAN, CLASSES.index("glioma")))
        args_ = (tf.constant(xs), tf.constant(ms), tf.constant(ys))
        fn(*args_)
        t0 = time.perf_counter()
        for _ in range(20):
            fn(*args_)
        print(f"augmenter, 32 images at 64 px, edits {name}: {(time.perf_counter() - t0) / 20 * 1e3:.1f} ms/batch")


if __name__ == "__main__":
    main()
