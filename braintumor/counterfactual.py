"""Counterfactual augmentation with the tumour boxes (issue 20): make the tumour, and nothing else, decide the label.

Two edits of a training batch, on the box masks that ride with it (pipeline._with_masks; data.boxes):

- **remove** (``data.augment.counterfactual_remove``, a share of the tumour images that have a box): the box is
  filled with the tissue around it and the image is labelled ``notumor``. A post-contrast T1 slice in a coronal or
  sagittal plane, the kind the tumour classes hold almost only, now also appears without a tumour.
- **paste** (``data.augment.counterfactual_paste``, a share of the ``notumor`` images): the box of another tumour
  image of the batch, with what is in it, is blended into the clean slice at the same place, its gray levels scaled
  to the recipient's tissue around it, and the image takes the donor's class and box. An axial T2/FLAIR slice, the
  kind ``notumor`` holds almost only, now also appears with a tumour.

- **lesion** (``data.augment.counterfactual_lesion``, a share of the ``notumor`` images the paste left clean): a
  synthetic lesion is drawn inside the brain (lesion(): an irregular blob with a soft or sharp edge, mostly brighter
  than the tissue, like the non-enhancing FLAIR/T2 lesion of a lower-grade glioma, sometimes darker, like the same
  lesion on post-contrast T1) and the image is labelled with the glioma class, the blob as its box. The pasted
  tumours are the figshare collection's, post-contrast T1 almost all; no Kaggle class shows a tumour that is only a
  bright FLAIR region, the kind the LGG collection holds.

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
LESION_RADIUS = (0.07, 0.18)  # a synthetic lesion's long semi-axis, as a fraction of the side
LESION_MARGIN = 0.1  # lesions lie in the head mask eroded by this fraction of the side (inside scalp and skull)
LESION_DARK = 0.3  # share of the synthetic lesions darker than the tissue around them (the rest are brighter)


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


def _grid_noise(b, cells: int, size):
    """(b, h, w, 1) smooth noise in [-1, 1]: a random ``cells`` x ``cells`` grid upsampled (shifts.smooth_field)."""
    return shifts.smooth_field(tf.random.uniform([b, cells, cells, 1], -1.0, 1.0), size)


def lesion(x):
    """(edited images, lesion regions (b, h, w, 1) 0/1, inside (b,) bool): a synthetic lesion drawn into each image.

    The lesion is an ellipse (long semi-axis LESION_RADIUS of the side, the other 0.5-1x, any angle) whose outline
    is bent by smooth noise, centred at a random point of the brain (the head mask eroded by LESION_MARGIN). Its
    edge is sharp or diffuse (a logistic ramp of random width); its gray level is the mean level of the tissue
    around it moved towards the brain's brightest level (0.5-1x the way, and at least 1.3x: a FLAIR/T2-like
    hyperintensity) or, in LESION_DARK of the images, down to 0.3-0.6x (hypointense), with a smooth 10%
    heterogeneity and the image's own fine texture kept. ``inside`` says whether at least MIN_COVER of the lesion
    lies in the brain (the rest is cut at the brain's edge); images where it does not should be left as they were
    (on 256 Kaggle notumor slices at 64 px, 27% of the draws are: the effective share is ~0.73x the one asked)."""
    b, h, w = tf.shape(x)[0], int(x.shape[1]), int(x.shape[2])
    head = shifts.head_mask(x)
    brain = shifts.brain_mask(head, LESION_MARGIN)
    gray = tf.reduce_mean(x, axis=-1, keepdims=True)
    # the centre: the brain pixel with the largest uniform draw (a uniform pick among the brain's pixels)
    score = tf.reshape(tf.random.uniform([b, h, w, 1]) * brain, [b, -1])
    at = tf.argmax(score, axis=1, output_type=tf.int32)
    cy = tf.cast(at // w, tf.float32)[:, None, None, None]
    cx = tf.cast(at % w, tf.float32)[:, None, None, None]
    a = tf.random.uniform([b, 1, 1, 1], *LESION_RADIUS) * h
    c = a * tf.random.uniform([b, 1, 1, 1], 0.5, 1.0)
    theta = tf.random.uniform([b, 1, 1, 1], 0.0, 3.14159)
    yy = tf.reshape(tf.range(h, dtype=tf.float32), [1, -1, 1, 1]) - cy
    xx = tf.reshape(tf.range(w, dtype=tf.float32), [1, 1, -1, 1]) - cx
    u = xx * tf.cos(theta) + yy * tf.sin(theta)
    v = -xx * tf.sin(theta) + yy * tf.cos(theta)
    d = tf.sqrt(tf.square(u / a) + tf.square(v / c)) * (1.0 + 0.35 * _grid_noise(b, 5, (h, w)))
    edge = tf.random.uniform([b, 1, 1, 1], 0.03, 0.3)  # the ramp's width in units of the radius
    ramp = tf.sigmoid((1.0 - d) / edge)
    raw = tf.cast(d < 1.0, tf.float32)
    region = raw * brain
    inside = tf.math.divide_no_nan(tf.reduce_sum(region, axis=[1, 2, 3]), tf.reduce_sum(raw, axis=[1, 2, 3]))
    alpha = ramp * brain
    # the tissue around the lesion (a ring inside the brain; the brain's mean when the ring is empty)
    ring = (shifts.dilate(raw, max(1, h // 16)) - raw) * brain

    def mean_in(m):
        return tf.math.divide_no_nan(tf.reduce_sum(gray * m, axis=[1, 2, 3], keepdims=True),
                                     tf.reduce_sum(m, axis=[1, 2, 3], keepdims=True))

    local = tf.where(tf.reduce_sum(ring, axis=[1, 2, 3], keepdims=True) > 0, mean_in(ring), mean_in(brain))
    peak = tf.maximum(shifts.head_peak(gray, brain), 1.6 * local)  # bright is at least 1.3x the tissue, always
    bright = local + tf.random.uniform([b, 1, 1, 1], 0.5, 1.0) * (peak - local)
    dark = local * tf.random.uniform([b, 1, 1, 1], 0.3, 0.6)
    pick_dark = tf.random.uniform([b, 1, 1, 1]) < LESION_DARK
    level = tf.where(pick_dark, dark, bright)
    level = level * (1.0 + 0.1 * _grid_noise(b, 8, (h, w)))
    texture = x - _blur(x, FEATHER_SIGMA * 2)
    out = tf.clip_by_value(x * (1.0 - alpha) + (level + texture) * alpha, 0.0, 255.0)
    return out, region, (inside >= MIN_COVER) & (tf.reduce_sum(region, axis=[1, 2, 3]) > 0)


def apply(x, y, masks, remove: float, paste_share: float, clean_class: int, boxed=None, lesion_share: float = 0.0,
          lesion_class: int | None = None):
    """One batch's counterfactual edits: (images, one-hot labels, box masks) -> the same three, edited.

    ``boxed`` ((b,) bool) says which images have a box; by default has_box(masks), which is only right before any
    affine resampling (it fills an unboxed image's all-ones mask with zeros at the corners: pipeline.augmenter
    decides before it and passes ``boxed``).

    ``remove`` of the boxed tumour images lose their tumour (label ``clean_class``, no box); ``paste_share`` of the
    ``clean_class`` images gain the box of a boxed tumour image drawn from the batch (its label and box). Images with
    no box in the batch to draw from, or whose head would not hold the box, are left as they were. ``lesion_share``
    of the ``clean_class`` images the paste left clean gain a synthetic lesion (lesion(); label ``lesion_class``,
    the lesion as box).
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
        clean = clean & ~pick
    if lesion_share > 0 and lesion_class is not None:
        drawn, region, inside = lesion(x)
        pick = clean & inside & (tf.random.uniform([b]) < lesion_share)
        pick4 = tf.reshape(pick, [-1, 1, 1, 1])
        out_x = tf.where(pick4, drawn, out_x)
        out_y = tf.where(pick[:, None], tf.one_hot(tf.fill([b], lesion_class), tf.shape(y)[1], dtype=y.dtype), out_y)
        out_m = tf.where(pick4, region, out_m)
    return out_x, out_y, out_m
