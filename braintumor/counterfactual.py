"""Counterfactual augmentation with the tumour boxes (issue 20): make the tumour, and nothing else, decide the label.

Two edits of a training batch, on the box masks that ride with it (pipeline._with_masks; data.boxes):

- **remove** (``data.augment.counterfactual_remove``, a share of the tumour images that have a box): the box is
  filled with the tissue around it and the image is labelled ``notumor``. A post-contrast T1 slice in a coronal or
  sagittal plane, the kind the tumour classes hold almost only, now also appears without a tumour.
- **paste** (``data.augment.counterfactual_paste``, a share of the ``notumor`` images): the box of another tumour
  image of the batch, with what is in it, is blended into the clean slice at the same place, its gray levels scaled
  to the recipient's tissue around it, and the image takes the donor's class and box. An axial T2/FLAIR slice, the
  kind ``notumor`` holds almost only, now also appears with a tumour.

Either way, the collection, the plane and the sequence of an image stop telling its class; only the region does.
In the spirit of counterfactual data augmentation for shortcut learning (Kaushik et al. 2020 for text; for images,
CutMix-like region swaps with labels that follow the region, Yun et al. 2019), with boxes instead of masks.

The fill is a normalised convolution (Knutsson & Westin 1993): a Gaussian average of the pixels outside the box
divided by the same average of the outside mask, so the box takes the smooth tissue around it, plus the fine
texture (image minus its blur) of the image shifted by a quarter of the side, so the filled box is not smoother than
tissue (a smooth patch would itself become a cue). Edges are feathered by a small blur of the box.
"""

from __future__ import annotations

import tensorflow as tf

from . import shifts

FILL_SIGMA = 1 / 8  # the fill's Gaussian, as a fraction of the side: wide enough to reach a box's middle
FEATHER_SIGMA = 1 / 48  # the blend's soft edge, as a fraction of the side (1.3 px at 64 px)
MIN_COVER = 0.7  # a pasted box must lie at least this much inside the recipient's head
SCALE_RANGE = (0.5, 2.0)  # the donor's gray levels are scaled by at most this much to match the recipient


def _blur(x, sigma_fraction: float):
    """Gaussian blur of (b, h, w, c) with sigma a fraction of the side, as two 1-D passes (a wide 2-D kernel, as
    keras.ops.image.gaussian_blur builds it, measured ~15x slower at the fill's width), zero padded."""
    s = max(sigma_fraction * int(x.shape[1]), 0.5)
    r = int(3 * s)
    t = tf.range(-r, r + 1, dtype=tf.float32)
    g = tf.exp(-0.5 * tf.square(t / s))
    g = g / tf.reduce_sum(g)
    c = int(x.shape[-1]) if x.shape[-1] is not None else 1
    row = tf.tile(tf.reshape(g, [1, -1, 1, 1]), [1, 1, c, 1])
    col = tf.tile(tf.reshape(g, [-1, 1, 1, 1]), [1, 1, c, 1])
    x = tf.nn.depthwise_conv2d(x, row, strides=[1, 1, 1, 1], padding="SAME")
    return tf.nn.depthwise_conv2d(x, col, strides=[1, 1, 1, 1], padding="SAME")


def has_box(masks):
    """(b,) True for an image whose mask marks a box (masks are all ones where there is no box)."""
    return tf.reduce_min(masks, axis=[1, 2, 3]) < 0.5


def feather(region):
    """The blend weight of a 0/1 region: 1 inside, falling off smoothly over a pixel or two outside."""
    return tf.maximum(region, tf.clip_by_value(_blur(region, FEATHER_SIGMA), 0.0, 1.0))


def fill(x, region):
    """``x`` with ``region`` ((b, h, w, 1) 0/1) replaced by the tissue around it (see the module's docstring)."""
    head = shifts.head_mask(x)
    tissue = (1.0 - region) * head  # what the fill may copy: the head, without the box
    smooth = tf.math.divide_no_nan(_blur(x * tissue, FILL_SIGMA), _blur(tissue, FILL_SIGMA))
    side = int(x.shape[2])
    donor = tf.roll(x, shift=side // 4, axis=2)
    inner = shifts.erode(tissue, max(1, side // 32))  # texture from tissue only: no head edge, no box
    texture = (donor - _blur(donor, FEATHER_SIGMA * 2)) * tf.roll(inner, shift=side // 4, axis=2)
    filled = tf.clip_by_value(smooth + texture, 0.0, 255.0) * head  # a box reaching past the head stays black there
    alpha = feather(region)
    return x * (1.0 - alpha) + filled * alpha


def paste(recipient, donor, region):
    """``donor``'s ``region`` blended into ``recipient`` at the same place, the donor's gray levels scaled so that
    the tissue around its box matches the recipient's there (within SCALE_RANGE)."""
    ring = tf.cast((shifts.dilate(region, max(1, int(recipient.shape[1]) // 16)) - region) > 0.5, recipient.dtype)
    ring = ring * shifts.head_mask(recipient) * shifts.head_mask(donor)

    def ring_mean(img):
        return tf.math.divide_no_nan(tf.reduce_sum(img * ring, axis=[1, 2, 3], keepdims=True),
                                     tf.reduce_sum(ring * tf.ones_like(img), axis=[1, 2, 3], keepdims=True))

    scale = tf.clip_by_value(tf.math.divide_no_nan(ring_mean(recipient), ring_mean(donor)), *SCALE_RANGE)
    scale = tf.where(ring_mean(donor) > 0, scale, tf.ones_like(scale))
    alpha = feather(region)
    return tf.clip_by_value(recipient * (1.0 - alpha) + donor * scale * alpha, 0.0, 255.0)


def apply(x, y, masks, remove: float, paste_share: float, clean_class: int, boxed=None):
    """One batch's counterfactual edits: (images, one-hot labels, box masks) -> the same three, edited.

    ``boxed`` ((b,) bool) says which images have a box; by default has_box(masks), which is only right before any
    affine resampling (it fills an unboxed image's all-ones mask with zeros at the corners: pipeline.augmenter
    decides before it and passes ``boxed``).

    ``remove`` of the boxed tumour images lose their tumour (label ``clean_class``, no box); ``paste_share`` of the
    ``clean_class`` images gain the box of a boxed tumour image drawn from the batch (its label and box). Images with
    no box in the batch to draw from, or whose head would not hold the box, are left as they were.
    """
    b = tf.shape(x)[0]
    clean = y[:, clean_class] > 0.5
    boxed = (has_box(masks) if boxed is None else boxed) & ~clean
    # masks are 1 inside a box and 0 outside (all ones without a box): the region is the mask of a boxed image
    region = tf.where(tf.reshape(boxed, [-1, 1, 1, 1]), masks, tf.zeros_like(masks))
    clean_y = tf.one_hot(tf.fill([b], clean_class), tf.shape(y)[1], dtype=y.dtype)
    out_x, out_y, out_m = x, y, masks
    if remove > 0:
        pick = boxed & (tf.random.uniform([b]) < remove)
        pick4 = tf.reshape(pick, [-1, 1, 1, 1])
        out_x = tf.where(pick4, fill(x, region), out_x)
        out_y = tf.where(pick[:, None], clean_y, out_y)
        out_m = tf.where(pick4, tf.ones_like(masks), out_m)
    if paste_share > 0:
        # a donor per image: a random boxed image of the batch (uniform over them); none when the batch has none
        logits = tf.where(boxed, 0.0, -1e9)[None, :] * tf.ones([b, 1])
        donor = tf.random.categorical(logits, 1, dtype=tf.int32)[:, 0]
        d_region = tf.gather(region, donor)
        cover = tf.math.divide_no_nan(tf.reduce_sum(d_region * shifts.head_mask(x), axis=[1, 2, 3]),
                                      tf.reduce_sum(d_region, axis=[1, 2, 3]))
        pick = clean & tf.reduce_any(boxed) & (cover >= MIN_COVER) & (tf.random.uniform([b]) < paste_share)
        pick4 = tf.reshape(pick, [-1, 1, 1, 1])
        out_x = tf.where(pick4, paste(x, tf.gather(x, donor), d_region), out_x)
        out_y = tf.where(pick[:, None], tf.gather(y, donor), out_y)
        out_m = tf.where(pick4, tf.gather(masks, donor), out_m)
    return out_x, out_y, out_m
