"""Fitting the gate's brain-MRI-or-not head at train time (gate_head.py): the positives (training images and
shifted copies of them), the package-built negatives, one forward pass over each, the head."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..config import Config
from ..gate_head import GateHead, fit_head
from ..images import ImageSpec
from ..nonbrain import negatives

# sequences of (shift, severity index into shifts.SHIFTS[shift].levels): brain MRI as another sequence or preparation
# shows it (a free gray-level curve, T1 <-> T2-like inversion, skull and scalp stripped at two margins, a bias field,
# a coarser acquisition: blurred, down-sampled 4x; stripped and smoothed, as a template is); each entry is applied
# in order to its own draw of training images
POSITIVE_SHIFTS = ((("remap", 4),), (("invert", 4),), (("skull_strip", 2),), (("skull_strip", 3),),
                   (("bias_field", 3),), (("blur", 3),), (("downsample", 3),), (("skull_strip", 3), ("blur", 2)))
SHIFTED_PER_KIND = 500  # training images drawn for each shift (4,000 forward passes in all)
NEGATIVES = 1200  # package-built non-brain images
NEGATIVE_SIZE = 256  # drawn at up to this side (4x the run's), then prepared as every input is (framing, resizing)


def shifted_positives(images: np.ndarray, rng: np.random.Generator, per_kind: int = SHIFTED_PER_KIND
                      ) -> np.ndarray:
    """(m, h, w, c) uint8: ``per_kind`` seeded draws of ``images`` under each of ``POSITIVE_SHIFTS``."""
    from ..shifts import SHIFTS  # lazy: TensorFlow, needed at fit time only

    out = []
    for steps in POSITIVE_SHIFTS:
        x = images[rng.choice(len(images), size=min(per_kind, len(images)), replace=False)]
        for name, severity in steps:
            x = SHIFTS[name].apply(x, severity, seed=int(rng.integers(1 << 31)))
        out.append(x)
    return np.concatenate(out)


def negative_images(spec: ImageSpec, n: int = NEGATIVES, seed: int = 0) -> np.ndarray:
    """(n, size, size, channels) uint8: nonbrain.negatives prepared exactly as an upload would be."""
    side = min(NEGATIVE_SIZE, 4 * spec.size)  # drawing at 256 px for a 32 px run only costs time
    return np.stack([spec.prepare(img)[0] for img in negatives(side, n, seed)])


def fit_oe_head(cfg: Config, images: np.ndarray, train_features: np.ndarray, held_features: np.ndarray,
                held_sources: list[str] | None, features_of: Callable[[np.ndarray], np.ndarray]) -> GateHead:
    """The head on ``train_features`` plus the features of shifted training ``images`` against those of the
    package-built negatives, its threshold on ``held_features`` (each source keeps its share).
    ``features_of``: (n, h, w, c) uint8 -> (n, d) the gate's pooled columns, as the scorer returns them."""
    rng = np.random.default_rng(cfg.seed)
    shifted = features_of(shifted_positives(images, rng))
    neg = features_of(negative_images(ImageSpec.of(cfg.data), seed=cfg.seed))
    return fit_head(np.r_[train_features, shifted], neg, held_features, held_sources)
