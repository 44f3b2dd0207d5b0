"""Does re-estimating batch-norm statistics on a site's unlabelled scans help a model that never saw the site?

AdaBN (Li et al. 2016, "Revisiting batch normalization for practical domain adaptation"): a network's batch-norm
layers normalise each channel with the mean and variance of the training images; on another scanner or sequence
those statistics are off, and every later layer sees shifted features. Re-estimating them on unlabelled images of
the new collection (no labels, no training) is the cheapest domain adaptation there is, and a clinic has unlabelled
scans. This probe measures it on a leave-LGG-out run (the model never saw LGG):

- each LGG sequence (``--source``) is its own domain; its patients are cut into ``--folds`` patient folds
  (GroupKFold), and each fold is scored by the model whose batch-norm statistics were re-estimated on the *other*
  folds' images of that sequence (the new patients' own images are not used: honest for a site that adapts on its
  archive and then meets new patients);
- every batch-norm layer in order: its input's per-channel mean and variance over those images (with the earlier
  layers already adapted) replace its moving statistics;
- reported per sequence: tumour-or-not AUC of 1 - p(notumor), tumour slices found and clean slices cleared at
  argmax, before and after; and the Kaggle validation images scored by a model adapted on all LGG FLAIR images
  (what adapting to a site costs at home).

    python benchmarks/adabn_probe.py runs/train/RUN --data lgg_flair=D/tcga-lgg-dev/flair \\
        --data lgg_t1ce=D/tcga-lgg-dev/t1ce [--folds 5]

Probabilities are the model's own (uncalibrated): AUC and argmax do not depend on a temperature.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

from braintumor.commands.evaluate import read_split
from braintumor.engine import scorer
from braintumor.models.loading import load_folder, load_listing, load_run

LGG_PATIENT = r"(TCGA_[A-Z0-9]{2}_[A-Z0-9]+_[0-9]+)_"


def adapt(model, images: np.ndarray, batch_size: int = 64):
    """A copy of ``model`` whose batch-norm moving statistics are those of ``images``, layer by layer."""
    adapted = keras.models.clone_model(model)
    adapted.set_weights(model.get_weights())
    for layer in adapted.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        probe = keras.Model(adapted.inputs, layer.input)
        axes = tuple(range(len(layer.input.shape) - 1))
        total, sq, n = 0.0, 0.0, 0
        for i in range(0, len(images), batch_size):
            x = np.asarray(probe(images[i:i + batch_size].astype("float32"), training=False), dtype=np.float64)
            total, sq = total + x.sum(axis=axes), sq + (x ** 2).sum(axis=axes)
            n += int(np.prod([x.shape[a] for a in axes]))
        mean = total / n
        layer.moving_mean.assign(mean.astype("float32"))
        layer.moving_variance.assign(np.maximum(sq / n - mean ** 2, 0.0).astype("float32"))
    return adapted


def figures(probs: np.ndarray, truth: np.ndarray, notumor: int) -> str:
    p_tumour = 1 - probs[:, notumor]
    said = probs.argmax(axis=1) != notumor
    return (f"{roc_auc_score(truth, p_tumour):.3f} | {said[truth].mean():.3f} | {(~said[~truth]).mean():.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", action="append", required=True, help="NAME=DIR of one sequence (class folders)")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    run = load_run(args.run)
    notumor = run.class_names.index("notumor")
    bs = run.config.train.batch_size
    print(f"{args.run.name}: | collection | model | AUC | tumour slices found | clean slices cleared |")
    print("|---|---|---|---|---|")
    flair_images = None
    for spec in args.data:
        name, _, folder = spec.partition("=")
        loaded = load_folder(run, folder)
        truth = loaded.labels != notumor
        patients = [re.search(LGG_PATIENT, p).group(1) for p in loaded.paths]
        plain = scorer.probabilities(run.model, loaded.images, bs)
        adapted = np.zeros_like(plain)
        t0 = time.perf_counter()
        for rest, held in GroupKFold(args.folds).split(loaded.images, groups=patients):
            adapted[held] = scorer.probabilities(adapt(run.model, loaded.images[rest], bs), loaded.images[held], bs)
        seconds = time.perf_counter() - t0
        print(f"| {name} | as trained | {figures(plain, truth, notumor)} |")
        print(f"| {name} | AdaBN on the other folds' patients ({seconds:.0f} s for {args.folds}) | "
              f"{figures(adapted, truth, notumor)} |")
        if flair_images is None:
            flair_images = (name, loaded.images)
    paths, labels, sources = read_split(run.path, "val")
    home = load_listing(run, paths, labels, sources)
    for label, model in (("as trained", run.model), (f"AdaBN on all of {flair_images[0]}",
                                                      adapt(run.model, flair_images[1], bs))):
        probs = scorer.probabilities(model, home.images, bs)
        acc = float((probs.argmax(axis=1) == home.labels).mean())
        print(f"| home validation ({len(home.labels)}) | {label} | four-class accuracy {acc:.4f} | "
              f"{figures(probs, home.labels != notumor, notumor)} |")


if __name__ == "__main__":
    main()
