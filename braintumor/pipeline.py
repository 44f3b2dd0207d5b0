"""tf.data pipelines over the in-memory uint8 cache: class weights, oversampling, collection-balanced sampling,
augmentation, batching."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from . import counterfactual, shifts
from .config import AugmentConfig
from .errors import ConfigError


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """'balanced' weights from these labels only (n / (k * count)); absent classes get weight 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    present = counts > 0
    w = np.ones(num_classes)
    w[present] = len(labels) / (present.sum() * counts[present])
    return {i: float(w[i]) for i in range(num_classes)}


def oversample(indices: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Repeat random members of smaller classes until every class has as many as the largest."""
    rng = np.random.default_rng(seed)
    by_class = [indices[labels[indices] == c] for c in np.unique(labels[indices])]
    top = max(len(b) for b in by_class)
    out = [np.concatenate([b, rng.choice(b, top - len(b), replace=True)]) for b in by_class]
    return np.sort(np.concatenate(out))


def augmenter(cfg: AugmentConfig, seed: int, clean_class: int | None = None, lesion_class: int | None = None):
    """A function (batch float32 0-255[, masks[, labels]]) -> augmented batch[, masks moved with it[, labels]].

    Rotation and zoom are one combined affine resampling (two Keras layers would resample twice, and resampling
    is most of the pipeline's cost); flips, brightness, contrast and erasing are Keras preprocessing layers. Masks
    (box masks for train.guidance) ride as extra channels through the geometric steps and skip the photometric
    ones. The shift levers (issue 20: remap, invert, skull_strip, bias_field, noise; shifts.py) come after the
    geometry, so the head mask they share is found on the image as the model will see it. The counterfactual edits
    (counterfactual.py; need masks, one-hot labels and ``clean_class``, the no-tumour class, and for the synthetic
    lesions ``lesion_class``, the class they take) come between the two,
    so a pasted or filled box gets the same contrast change as the rest of its image.
    """
    layers = []
    mode = "horizontal_and_vertical" if cfg.flip_horizontal and cfg.flip_vertical else (
        "horizontal" if cfg.flip_horizontal else "vertical" if cfg.flip_vertical else None)
    flip = keras.layers.RandomFlip(mode, seed=seed) if mode else None
    if cfg.brightness > 0:
        layers.append(keras.layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 3))
    if cfg.contrast > 0:
        layers.append(keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 4))
    # one rectangle of a quarter to a half of each side, blanked to black, in a share `erasing` of the images
    # (factor (p, p): a single p would draw each image's probability from [0, p])
    erase = keras.layers.RandomErasing(factor=(cfg.erasing, cfg.erasing), scale=(0.25 ** 2, 0.5 ** 2), fill_value=0,
                                       value_range=(0, 255), seed=seed + 6) if cfg.erasing > 0 else None
    rotation, zoom, shift = cfg.rotation, cfg.zoom, cfg.translate

    edits = clean_class is not None and (cfg.counterfactual_remove > 0 or cfg.counterfactual_paste > 0
                                         or cfg.counterfactual_lesion > 0)

    def apply(x, masks=None, labels=None):
        channels = tf.shape(x)[-1]
        if masks is not None:
            # an image without a box has an all-ones mask, but the affine step fills what it brings in with zeros:
            # which images have a box is decided here, before it (guidance still reads the moved masks, see guidance.py)
            boxed = tf.reduce_min(masks, axis=[1, 2, 3]) < 0.5
            x = tf.concat([x, masks], axis=-1)
        if rotation > 0 or zoom > 0 or shift > 0:
            x = _random_affine(x, rotation, zoom, shift)
        if flip is not None:
            x = flip(x, training=True)
        if masks is not None:
            x, masks = x[..., :channels], x[..., channels:]
            if edits and labels is not None:
                x, labels, masks = counterfactual.apply(x, labels, masks, cfg.counterfactual_remove,
                                                        cfg.counterfactual_paste, clean_class, boxed,
                                                        cfg.counterfactual_lesion, lesion_class)
        x = _sequence_and_skull(x, cfg)
        for layer in layers:
            x = layer(x, training=True)
        x = _scanner_shading(x, cfg)
        if erase is not None:
            x = erase(x, training=True)
        x = tf.clip_by_value(x, 0.0, 255.0)
        if labels is not None:
            return x, masks, labels
        return x if masks is None else (x, masks)

    return apply


def _sequence_and_skull(x, cfg: AugmentConfig):
    """Contrast/sequence randomisation inside the head (random gray-level curves, inversion: SynthSeg-style domain
    randomisation, Billot et al. 2023) and skull stripping, each on a random share of the images; the background
    stays black, so no lever adds a frame cue of its own."""
    if not (cfg.remap > 0 or cfg.invert > 0 or cfg.skull_strip > 0):
        return x
    b = tf.shape(x)[0]
    head = shifts.head_mask(x)
    if cfg.remap > 0:
        knots = shifts.random_knots(b, cfg.remap_points, cfg.remap_monotone)
        x = tf.where(shifts.chosen(b, cfg.remap), shifts.remap(x, head, knots), x)
    if cfg.invert > 0:
        x = tf.where(shifts.chosen(b, cfg.invert), shifts.invert(x, head), x)
    if cfg.skull_strip > 0:
        x = tf.where(shifts.chosen(b, cfg.skull_strip), x * shifts.brain_mask(head, cfg.skull_strip_margin), x)
    return x


def _scanner_shading(x, cfg: AugmentConfig):
    """A smooth multiplicative bias field of random strength up to ``bias_field`` and Rician noise of random sigma
    up to ``noise`` x 255, on every image."""
    b = tf.shape(x)[0]
    if cfg.bias_field > 0:
        grid = tf.random.uniform([b, shifts.BIAS_GRID, shifts.BIAS_GRID, 1], -1.0, 1.0)
        field = shifts.smooth_field(grid, tf.shape(x)[1:3])
        x = shifts.bias_field(x, field, tf.random.uniform([b], 0.0, cfg.bias_field))
    if cfg.noise > 0:
        sigma = tf.random.uniform([b], 0.0, cfg.noise * 255.0)
        x = shifts.rician_noise(x, sigma, _normal(tf.shape(x)), _normal(tf.shape(x)))
    return x


def _normal(shape):
    """Standard normal noise from a fresh random seed: the stateless kernel measured ~10x faster on CPU than
    tf.random.normal for a (32, 64, 64, 1) batch."""
    seed = tf.random.uniform([2], 0, 2 ** 31 - 1, dtype=tf.int32)
    return tf.random.stateless_normal(shape, seed=seed)


def _random_affine(x, rotation: float, zoom: float, shift: float = 0.0):
    """Rotate by up to +-rotation of a full turn, magnify by 1 +- zoom about the centre and shift by up to
    +-shift of the side, in one resampling (keras.ops.image.affine_transform)."""
    shape = tf.shape(x)
    b = shape[0]
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    theta = tf.random.uniform([b], -rotation, rotation) * 2.0 * math.pi
    scale = tf.random.uniform([b], 1.0 - zoom, 1.0 + zoom)
    tx = tf.random.uniform([b], -shift, shift) * w
    ty = tf.random.uniform([b], -shift, shift) * h
    return shifts.affine(x, theta, scale, tx, ty)


def balanced_indices(labels: np.ndarray, sources: Sequence[str] | None, balance: str, seed: int):
    """An epoch of ``len(labels)`` image indices drawn so that collections come equally often (``source``), or
    collections equally and each collection's classes equally within it (``source_class``), whatever their sizes.

    Each cell (a collection, or a collection's class) is an endlessly reshuffled stream of its indices, and
    ``tf.data.Dataset.sample_from_datasets`` picks a stream per draw with the cell's weight, afresh every epoch:
    small collections repeat within an epoch, large ones are sub-sampled, and the epoch keeps its length (so the
    step count and the schedule are those of an unbalanced run).
    """
    if sources is None or len(sources) != len(labels):
        raise ConfigError(f"data.balance: {balance} needs each training image's collection; pass the collections "
                          "with --data NAME=DIR (repeatable), or set data.balance: none")
    src = np.asarray(sources)
    cells, weights = [], []
    names = list(dict.fromkeys(src.tolist()))
    for name in names:
        in_source = np.flatnonzero(src == name)
        groups = [in_source] if balance == "source" else \
            [in_source[labels[in_source] == c] for c in np.unique(labels[in_source])]
        for g in groups:
            cells.append(g)
            weights.append(1.0 / (len(names) * len(groups)))
    streams = [tf.data.Dataset.from_tensor_slices(g.astype(np.int64))
               .shuffle(len(g), seed=seed + i, reshuffle_each_iteration=True).repeat()
               for i, g in enumerate(cells)]
    return tf.data.Dataset.sample_from_datasets(streams, weights=weights, seed=seed,
                                                rerandomize_each_iteration=True).take(len(labels))


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    batch_size: int,
    *,
    training: bool = False,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    masks: np.ndarray | None = None,
    sources: Sequence[str] | None = None,
    balance: str = "none",
    guided: bool = True,
    clean_class: int | None = None,
    lesion_class: int | None = None,
):
    """Batches of (float32 0-255 images, one-hot labels); shuffled and augmented when training. ``masks``
    ((n, h, w) 0/1, train.guidance's boxes): batches are (images, labels, (b, h, w, 1) masks moved as the images
    were). ``balance`` (data.balance; training only, needs ``sources``, each image's collection): ``source`` draws
    every collection equally often, ``source_class`` every collection equally and, within it, each of its classes
    equally (see balanced_indices). ``guided`` False: the masks serve the counterfactual edits only (data.augment.
    counterfactual_*, with ``clean_class``, the no-tumour class's index, and ``lesion_class``, the class a synthetic
    lesion takes) and batches are (images, labels)."""
    # The uint8 array is the cache. Shuffle and batch indices, then gather each batch: a shuffle buffer of
    # images would hold a second copy of the whole dataset.
    images_t = tf.convert_to_tensor(images)
    labels_t = tf.convert_to_tensor(np.asarray(labels, dtype=np.int64))
    if training and balance != "none":
        ds = balanced_indices(np.asarray(labels), sources, balance, seed)
    else:
        ds = tf.data.Dataset.range(len(labels))
        if training:
            ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if masks is not None:
        return _with_masks(ds, images_t, labels_t, num_classes, masks, augment if training else None,
                           seed, guided, clean_class, lesion_class).prefetch(tf.data.AUTOTUNE)
    ds = ds.map(lambda i: (tf.cast(tf.gather(images_t, i), tf.float32),
                           tf.one_hot(tf.gather(labels_t, i), num_classes)), num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment is not None:
        aug = augmenter(augment, seed)
        ds = ds.map(lambda x, y: (aug(x), y), num_parallel_calls=tf.data.AUTOTUNE)
        if augment.mixup > 0:  # blends image pairs and their labels within each batch (Keras' MixUp layer)

            mix = keras.layers.MixUp(alpha=augment.mixup, seed=seed + 5)

            def mixup(x, y):
                out = mix({"images": x, "labels": y}, training=True)
                return out["images"], out["labels"]

            ds = ds.map(mixup, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _with_masks(ds, images_t, labels_t, num_classes: int, masks: np.ndarray, augment: AugmentConfig | None,
                seed: int, guided: bool = True, clean_class: int | None = None, lesion_class: int | None = None):
    """Index batches -> (images, labels, masks): each mask gathered with its image and augmented (and, with the
    counterfactual edits, edited) with it; (images, labels) when not ``guided``."""
    masks_t = tf.convert_to_tensor(np.asarray(masks, dtype=np.uint8))
    aug = augmenter(augment, seed, clean_class, lesion_class) if augment is not None else None

    def attach(i):
        x = tf.cast(tf.gather(images_t, i), tf.float32)
        y = tf.one_hot(tf.gather(labels_t, i), num_classes)
        m = tf.cast(tf.gather(masks_t, i), tf.float32)[..., None]
        if aug is not None:
            x, m, y = aug(x, m, y)
        return (x, y, m) if guided else (x, y)

    return ds.map(attach, num_parallel_calls=tf.data.AUTOTUNE)
