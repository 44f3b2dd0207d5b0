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
    """Separable square max filter of side 2 * radius + 1 ((b, h, w, 1) float)."""
    if radius <= 0:
        return m
    k = 2 * radius + 1
    m = tf.nn.max_pool2d(m, ksize=(1, k), strides=1, padding="SAME")
    return tf.nn.max_pool2d(m, ksize=(k, 1), strides=1, padding="SAME")


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
    four sides of it along its row and its column. That fills the dark ventricles and CSF a threshold misses (and a
    head's shallow concavities), in four cumulative sums instead of an iterative flood fill.
    """
    g = tf.reduce_mean(x, axis=-1, keepdims=True)
    peak = tf.reduce_max(g, axis=[1, 2, 3], keepdims=True)
    fg = tf.cast(g > threshold * peak, tf.float32)  # an all-black image has no foreground
    fg = dilate(erode(fg, 1), 1)
    inside = None
    for axis in (1, 2):
        for reverse in (False, True):
            seen = tf.cumsum(fg, axis=axis, reverse=reverse) > 0
            inside = seen if inside is None else inside & seen
    return tf.cast(inside, tf.float32)


def brain_mask(head, margin: float):
    """The head mask eroded by ``margin`` x the image side: the scalp and skull of a 2-D slice are a rim a few
    per cent of the side thick, so what is left is (roughly) the brain."""
    radius = int(round(margin * int(head.shape[1])))
    return erode(head, radius)


def remap(x, mask, knots):
    """Gray levels inside ``mask`` sent through a piecewise-linear curve; outside unchanged.

    ``knots`` (b, k) in [0, 1] are the curve's values at k equally spaced gray levels from 0 to 255 (k >= 2):
    sorted knots keep the order of tissues (a contrast change), free ones can reorder them (another sequence).
    """
    k = tf.shape(knots)[1]
    shape = tf.shape(x)
    flat = tf.reshape(x, [shape[0], -1])
    t = tf.clip_by_value(flat, 0.0, 255.0) / 255.0 * tf.cast(k - 1, tf.float32)
    i = tf.clip_by_value(tf.floor(t), 0.0, tf.cast(k - 2, tf.float32))
    f = t - i
    i = tf.cast(i, tf.int32)
    lo = tf.gather(knots, i, batch_dims=1)
    hi = tf.gather(knots, i + 1, batch_dims=1)
    y = tf.reshape((lo * (1.0 - f) + hi * f) * 255.0, shape)
    return mask * y + (1.0 - mask) * x


def invert(x, mask):
    """255 - v inside ``mask`` (a T1-like slice turns T2-like: dark fluid bright); the background stays as it is."""
    return mask * (255.0 - x) + (1.0 - mask) * x


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
