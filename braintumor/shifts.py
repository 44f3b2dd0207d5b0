"""Image shifts as TensorFlow ops on (batch, h, w, channels) float 0-255 batches: the head and brain masks, gray-level
remapping and inversion inside the head, a smooth bias field, Rician noise and the affine resampling. The training
augmentation draws their parameters at random (pipeline.augmenter); the stress report (commands/stress.py) applies
them, with gamma, blur, down-sampling, JPEG, zoom and rotation, at fixed severities (``SHIFTS``).

Library calls where one fits: keras.ops.image (affine_transform, gaussian_blur), tf.image (resize, adjust_gamma),
Pillow (JPEG). Hand code only where none does: Keras' RandomInvert and RandomContrast act on the whole frame (a
black background would turn white or gray, itself a collection cue), and no Keras, TF or SciPy op inside tf.data
draws a piecewise-linear gray-level curve, an MRI bias field or Rician noise.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

HEAD_THRESHOLD = 0.1  # foreground: gray level above this share of the image's brightest pixel
BIAS_GRID = 4  # the bias field is a (4 x 4) random grid upsampled bicubically: one or two smooth swells per side


def _max_filter(m, radius: int):
    """Square max filter of side 2 * radius + 1 ((b, h, w, 1) float). One square pool: on CPU it measured ~4x
    faster than the separable pair of (1, k) and (k, 1) pools at the radii used here (<= 8)."""
    if radius <= 0:
        return m
    return tf.nn.max_pool2d(m, ksize=2 * radius + 1, strides=1, padding="SAME")


def erode(m, radius: int):
    """Binary erosion of (b, h, w, 1) 0/1 masks by a square of side 2 * radius + 1 (min = -max(-m))."""
    return -_max_filter(-m, radius)


def dilate(m, radius: int):
    """Binary dilation of (b, h, w, 1) 0/1 masks by a square of side 2 * radius + 1."""
    return _max_filter(m, radius)


def affine(x, theta, scale, tx, ty):
    """Rotate each image by ``theta`` radians and magnify it by ``scale`` about its centre, then shift it by
    (tx, ty) pixels; zero outside; bilinear. Arguments are (b,) tensors."""
    shape = tf.shape(x)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    # maps each output pixel to the input pixel it samples: rotate and shrink about the centre, then shift
    transforms = tf.stack([cos, -sin, cx - cos * cx + sin * cy + tx, sin, cos, cy - sin * cx - cos * cy + ty,
                           tf.zeros_like(cos), tf.zeros_like(cos)], axis=1)
    return keras.ops.image.affine_transform(x, transforms, interpolation="bilinear", fill_mode="constant",
                                            fill_value=0.0)


def head_mask(x, threshold: float = HEAD_THRESHOLD):
    """(b, h, w, 1) 1.0 inside the head, 0.0 on the background, estimated from the image alone.

    Foreground is every pixel brighter than ``threshold`` x the image's brightest one, opened (3x3 erosion, then
    dilation) to drop background speckle; holes are filled by rays: a pixel is inside when foreground lies on all
    four sides of it along its row and its column (between the first and the last foreground pixel of both). That
    fills the dark ventricles and CSF a threshold misses (and a head's shallow concavities) with four reductions
    instead of an iterative flood fill (scipy's binary_fill_holes would need a py_function in tf.data).
    """
    g = tf.reduce_mean(x, axis=-1, keepdims=True)
    peak = tf.reduce_max(g, axis=[1, 2, 3], keepdims=True)
    fg = dilate(erode(tf.cast(g > threshold * peak, tf.float32), 1), 1) > 0  # an all-black image: no foreground
    inside = None
    for axis, shape in ((1, [1, -1, 1, 1]), (2, [1, 1, -1, 1])):
        pos = tf.reshape(tf.range(tf.shape(g)[axis], dtype=tf.float32), shape)
        first = tf.reduce_min(tf.where(fg, pos, 1e9), axis=axis, keepdims=True)
        last = tf.reduce_max(tf.where(fg, pos, -1.0), axis=axis, keepdims=True)
        between = (pos >= first) & (pos <= last)
        inside = between if inside is None else inside & between
    return tf.cast(inside, tf.float32)


def brain_mask(head, margin: float):
    """The head mask eroded by ``margin`` x the image side: the scalp and skull of a 2-D slice are a rim a few
    per cent of the side thick, so what is left is (roughly) the brain."""
    radius = int(round(margin * int(head.shape[1])))
    return erode(head, radius)


def head_peak(x, mask):
    """(b, 1, 1, 1) each image's brightest gray level inside ``mask`` (at least 1): the top of its own range."""
    return tf.maximum(tf.reduce_max(x * mask, axis=[1, 2, 3], keepdims=True), 1.0)


def remap(x, mask, knots):
    """Gray levels inside ``mask`` sent through a piecewise-linear curve; outside unchanged.

    ``knots`` (b, k) in [0, 1] (k known when traced) are the curve's values at k equally spaced levels from 0 to
    the image's peak inside the mask (head_peak), in units of that peak (k >= 2): the curve changes contrast, not
    the image's range (a dim slice stays dim; brightness has its own lever). Sorted knots keep the order of tissues
    (a contrast change), free ones can reorder them (another sequence).
    """
    peak = head_peak(x, mask)
    t = tf.clip_by_value(x / peak, 0.0, 1.0) * float(knots.shape[1] - 1)  # position along the knots
    y = tf.reshape(knots[:, 0], [-1, 1, 1, 1])
    for i in range(knots.shape[1] - 1):  # a sum of ramps, one per segment: no gather
        rise = tf.reshape(knots[:, i + 1] - knots[:, i], [-1, 1, 1, 1])
        y = y + rise * tf.clip_by_value(t - float(i), 0.0, 1.0)
    y = y * peak
    return mask * y + (1.0 - mask) * x


def invert(x, mask):
    """peak - v inside ``mask``, peak the image's brightest level there (head_peak): a T1-like slice turns T2-like
    (dark fluid bright) within its own range; the background stays as it is."""
    return mask * (head_peak(x, mask) - x) + (1.0 - mask) * x


def smooth_field(grid, size: tuple[int, int]):
    """(b, h, w, 1) a coarse (b, g, g, 1) grid in [-1, 1] upsampled bicubically to ``size``: smooth and low order
    (clipped to [-1, 1]: bicubic overshoots a little between knots)."""
    return tf.clip_by_value(tf.image.resize(grid, size, method="bicubic"), -1.0, 1.0)


def bias_field(x, field, strength):
    """x multiplied by exp(strength x field): a smooth coil-sensitivity shading (``strength`` (b,) or a number;
    exp keeps the gain positive and symmetric in log space). Black stays black."""
    s = tf.reshape(tf.cast(strength, tf.float32), [-1, 1, 1, 1])
    return tf.clip_by_value(x * tf.exp(s * field), 0.0, 255.0)


def rician_noise(x, sigma, n1, n2):
    """Magnitude-image noise: |x + sigma (n1 + i n2)| with n1, n2 standard normal (the noise of a magnitude MR
    image, Gudbjartsson & Patz 1995); ``sigma`` (b,) or a number, in gray levels. Lifts the black background to a
    Rayleigh floor, as real scanners do."""
    s = tf.reshape(tf.cast(sigma, tf.float32), [-1, 1, 1, 1])
    return tf.clip_by_value(tf.sqrt(tf.square(x + s * n1) + tf.square(s * n2)), 0.0, 255.0)


def random_knots(batch, points: int, monotone: float):
    """(batch, points) random curve values in [0, 1]: sorted (a rising curve) for a share ``monotone`` of the
    images, free for the rest."""
    u = tf.random.uniform([batch, points])
    rising = tf.random.uniform([batch, 1]) < monotone
    return tf.where(rising, tf.sort(u, axis=1), u)


def chosen(batch, p: float):
    """(batch, 1, 1, 1) True for a random share ``p`` of the images."""
    return tf.random.uniform([batch, 1, 1, 1]) < p


# --- fixed-severity shifts for the stress report ------------------------------------------------------------
# Each takes (n, h, w, c) float32 0-255 images at the model's input size, a level and a NumPy generator (for the
# parts drawn once per image: the remapping curve, the bias field, the noise; the same draws at every level, so
# severity alone changes), and returns shifted float32 images. Level 0 / None is the identity.

CHUNK = 256  # images per TensorFlow call: bounds memory at large input sizes


def _blend(x, shifted, alpha: float):
    return (1.0 - alpha) * x + alpha * shifted


def _invert(x, alpha: float, rng):
    return _blend(x, invert(x, head_mask(x)), alpha)


def _remap(x, alpha: float, rng):
    knots = tf.constant(rng.random((len(x), 6)), tf.float32)  # free curves: tissues can change order
    return _blend(x, remap(x, head_mask(x), knots), alpha)


def _gamma(x, gamma: float, rng):
    return tf.image.adjust_gamma(x / 255.0, gamma) * 255.0


def _bias(x, strength: float, rng):
    grid = tf.constant(rng.uniform(-1, 1, (len(x), BIAS_GRID, BIAS_GRID, 1)), tf.float32)
    return bias_field(x, smooth_field(grid, tuple(x.shape[1:3])), strength)


def _noise(x, sigma: float, rng):
    n1, n2 = (tf.constant(rng.standard_normal(x.shape), tf.float32) for _ in range(2))
    return rician_noise(x, sigma * 255.0, n1, n2)


def _blur(x, sigma: float, rng):
    s = sigma * int(x.shape[1])  # in pixels of this input size
    k = 2 * math.ceil(3 * s) + 1
    return keras.ops.image.gaussian_blur(x, kernel_size=(k, k), sigma=(s, s))


def _downsample(x, factor: float, rng):
    h, w = int(x.shape[1]), int(x.shape[2])
    small = tf.image.resize(x, (max(1, round(h / factor)), max(1, round(w / factor))), method="area")
    return tf.image.resize(small, (h, w), method="bilinear")


def _jpeg(x, quality: int, rng):
    """Re-encoded with Pillow at this JPEG quality (gray as mode L, so no chroma subsampling is involved)."""
    out = []
    for img in np.clip(np.rint(np.asarray(x)), 0, 255).astype(np.uint8):
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(quality))
        back = np.asarray(Image.open(buf), np.float32)
        out.append(back[..., None] if back.ndim == 2 else back)
    return tf.constant(np.stack(out))


def _skull_strip(x, margin: float, rng):
    return x * brain_mask(head_mask(x), margin)


def _zoom(x, scale: float, rng):
    n = tf.shape(x)[0]
    return affine(x, tf.zeros([n]), tf.fill([n], float(scale)), tf.zeros([n]), tf.zeros([n]))


def _rotate(x, degrees: float, rng):
    n = tf.shape(x)[0]
    return affine(x, tf.fill([n], math.radians(degrees)), tf.ones([n]), tf.zeros([n]), tf.zeros([n]))


@dataclass(frozen=True)
class Shift:
    """A controlled shift: its levels (the first is the identity) and what one level means."""

    name: str
    levels: tuple
    unit: str
    fn: Callable

    def apply(self, images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
        """(n, h, w, c) uint8 images at severity ``severity`` (an index into ``levels``; 0 = unchanged) -> uint8.
        Per-image random parts (curve, field, noise) come from ``seed`` alone, the same at every severity."""
        level = self.levels[severity]
        if severity == 0:
            return np.asarray(images)
        rng = np.random.default_rng(seed)
        out = []
        for start in range(0, len(images), CHUNK):
            x = tf.constant(np.asarray(images[start:start + CHUNK], np.float32))
            out.append(np.clip(np.rint(np.asarray(self.fn(x, level, rng))), 0, 255).astype(np.uint8))
        return np.concatenate(out) if out else np.asarray(images)


# Levels are chosen to span "a different scanner or protocol" to "clearly degraded" at 64-256 px inputs.
SHIFTS = {s.name: s for s in (
    Shift("invert", (0.0, 0.25, 0.5, 0.75, 1.0), "share of the inverted head blended in (1 = T1 <-> T2-like)", _invert),
    Shift("remap", (0.0, 0.25, 0.5, 0.75, 1.0), "share of a random 6-knot gray-level curve blended in", _remap),
    Shift("gamma", (1.0, 1.5, 2.0, 3.0), "gamma exponent on 0-1 gray levels (> 1 darkens mid-grays)", _gamma),
    Shift("bias_field", (0.0, 0.2, 0.4, 0.6, 0.8), "strength a of the gain exp(a * g), g smooth in [-1, 1]", _bias),
    Shift("noise", (0.0, 0.02, 0.05, 0.1, 0.15), "Rician sigma as a fraction of 255", _noise),
    Shift("blur", (0.0, 0.004, 0.008, 0.016, 0.024), "Gaussian sigma as a fraction of the side", _blur),
    Shift("downsample", (1.0, 2.0, 3.0, 4.0, 6.0), "factor down (area) and back up (bilinear)", _downsample),
    Shift("jpeg", (None, 75, 50, 25, 10), "JPEG quality of a re-encoding", _jpeg),
    Shift("skull_strip", (None, 0.03, 0.06, 0.09), "head mask eroded by this fraction of the side; outside zeroed",
          _skull_strip),
    Shift("zoom", (1.0, 1.15, 1.3, 1.5, 1.75), "magnification about the centre (a tighter crop)", _zoom),
    Shift("rotation", (0.0, 10.0, 20.0, 30.0, 45.0), "degrees, about the centre", _rotate),
)}
