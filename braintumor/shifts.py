"""Image shifts as TensorFlow ops on (batch, h, w, channels) float 0-255 batches: the head and brain masks, gray-level
remapping and inversion inside the head, a smooth bias field and Rician noise. The training augmentation draws
their parameters at random (pipeline.augmenter); the stress report (stress.py) applies them at fixed severities.

Only what no library does is written here: Keras' RandomInvert and RandomContrast act on the whole frame (a black
background would turn white or gray, which is itself a collection cue), and no Keras, TF or SciPy op draws a
piecewise-linear gray-level curve, an MRI bias field or Rician noise.
"""

from __future__ import annotations

import tensorflow as tf

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

    ``knots`` (b, k) in [0, 1] (k known when traced) are the curve's values at k equally spaced levels from 0 to the image's peak inside
    the mask (head_peak), in units of that peak (k >= 2): the curve changes contrast, not the image's range (a dim
    slice stays dim; brightness has its own lever). Sorted knots keep the order of tissues (a contrast change),
    free ones can reorder them (another sequence).
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
