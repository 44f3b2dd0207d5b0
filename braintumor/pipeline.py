"""tf.data pipelines over the in-memory uint8 cache: class weights, oversampling, augmentation, batching."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from .config import AugmentConfig


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


def augmenter(cfg: AugmentConfig, seed: int):
    """A function (batch float32 0-255[, masks]) -> augmented batch[, masks moved with it].

    Rotation and zoom are one combined affine resampling (two Keras layers would resample twice, and resampling
    is most of the pipeline's cost); flips, brightness and contrast are Keras preprocessing layers. Masks (box
    masks for train.guidance) ride as extra channels through the geometric steps and skip the photometric ones.
    """
    layers = []
    mode = "horizontal_and_vertical" if cfg.flip_horizontal and cfg.flip_vertical else (
        "horizontal" if cfg.flip_horizontal else "vertical" if cfg.flip_vertical else None)
    flip = keras.layers.RandomFlip(mode, seed=seed) if mode else None
    if cfg.brightness > 0:
        layers.append(keras.layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 3))
    if cfg.contrast > 0:
        layers.append(keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 4))
    rotation, zoom, erase_p, shift = cfg.rotation, cfg.zoom, cfg.erasing, cfg.translate

    def apply(x, masks=None):
        channels = tf.shape(x)[-1]
        if masks is not None:
            x = tf.concat([x, masks], axis=-1)
        if rotation > 0 or zoom > 0 or shift > 0:
            x = _random_affine(x, rotation, zoom, shift)
        if flip is not None:
            x = flip(x, training=True)
        if masks is not None:
            x, masks = x[..., :channels], x[..., channels:]
        for layer in layers:
            x = layer(x, training=True)
        if erase_p > 0:
            x = _random_erase(x, erase_p)
        x = tf.clip_by_value(x, 0.0, 255.0)
        return x if masks is None else (x, masks)

    return apply


def _random_affine(x, rotation: float, zoom: float, shift: float = 0.0):
    """Rotate by up to +-rotation of a full turn, magnify by 1 +- zoom about the centre and shift by up to
    +-shift of the side, in one resampling."""
    shape = tf.shape(x)
    b = shape[0]
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    theta = tf.random.uniform([b], -rotation, rotation) * 2.0 * math.pi
    scale = tf.random.uniform([b], 1.0 - zoom, 1.0 + zoom)
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    tx = tf.random.uniform([b], -shift, shift) * w
    ty = tf.random.uniform([b], -shift, shift) * h
    # maps each output pixel to the input pixel it samples: rotate and shrink about the centre, then shift
    transforms = tf.stack([cos, -sin, cx - cos * cx + sin * cy + tx, sin, cos, cy - sin * cx - cos * cy + ty,
                           tf.zeros([b]), tf.zeros([b])], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=shape[1:3], fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT")


def _random_erase(x, p: float):
    """Blank one random rectangle (a quarter to a sixteenth of the image) in a fraction p of the images."""
    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    eh = tf.cast(tf.cast(h, tf.float32) * tf.random.uniform([b], 0.25, 0.5), tf.int32)
    ew = tf.cast(tf.cast(w, tf.float32) * tf.random.uniform([b], 0.25, 0.5), tf.int32)
    y0 = tf.cast(tf.random.uniform([b]) * tf.cast(h - eh, tf.float32), tf.int32)
    x0 = tf.cast(tf.random.uniform([b]) * tf.cast(w - ew, tf.float32), tf.int32)
    rows = tf.range(h)[None, :, None]
    cols = tf.range(w)[None, None, :]
    inside = ((rows >= y0[:, None, None]) & (rows < (y0 + eh)[:, None, None])
              & (cols >= x0[:, None, None]) & (cols < (x0 + ew)[:, None, None]))
    apply = tf.random.uniform([b, 1, 1]) < p
    mask = tf.cast(inside & apply, x.dtype)[..., None]
    return x * (1.0 - mask)


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
):
    """Batches of (float32 0-255 images, one-hot labels); shuffled and augmented when training. ``masks``
    ((n, h, w) 0/1, train.guidance's boxes): batches are (images, labels, (b, h, w, 1) masks moved as the images
    were)."""
    # The uint8 array is the cache. Shuffle and batch indices, then gather each batch: a shuffle buffer of
    # images would hold a second copy of the whole dataset.
    images_t = tf.convert_to_tensor(images)
    labels_t = tf.convert_to_tensor(np.asarray(labels, dtype=np.int64))
    ds = tf.data.Dataset.range(len(labels))
    if training:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if masks is not None:
        return _with_masks(ds, images_t, labels_t, num_classes, masks, augment if training else None,
                           seed).prefetch(tf.data.AUTOTUNE)
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
                seed: int):
    """Index batches -> (images, labels, masks): each mask gathered with its image and augmented with it."""
    masks_t = tf.convert_to_tensor(np.asarray(masks, dtype=np.uint8))
    aug = augmenter(augment, seed) if augment is not None else None

    def attach(i):
        x = tf.cast(tf.gather(images_t, i), tf.float32)
        y = tf.one_hot(tf.gather(labels_t, i), num_classes)
        m = tf.cast(tf.gather(masks_t, i), tf.float32)[..., None]
        if aug is not None:
            x, m = aug(x, m)
        return x, y, m

    return ds.map(attach, num_parallel_calls=tf.data.AUTOTUNE)
