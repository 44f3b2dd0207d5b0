"""Find images and classes, decode them once, split, and build tf.data pipelines.

Images are decoded with Pillow (it reads every kind users bring: grayscale, RGBA, palette, 16-bit, BMP, CMYK JPEG)
into one uint8 array: that array is the cache. tf.data only batches, casts, augments and prefetches it, so a broken
file is found and listed before training starts and can never crash an epoch.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import CANONICAL_CLASSES, AugmentConfig
from .errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

# Spellings seen in public MRI datasets, reduced to lower-case letters only.
_CLASS_ALIASES = {
    "glioma": "glioma",
    "meningioma": "meningioma",
    "pituitary": "pituitary",
    "notumor": "notumor",
    "no": "notumor",
    "none": "notumor",
    "normal": "notumor",
    "healthy": "notumor",
    "negative": "notumor",
}


def class_key(name: str) -> str:
    """Reduce a folder or class name to the letters that identify it: 'Glioma_Tumour' -> 'glioma'."""
    key = re.sub(r"[^a-z]", "", name.lower())
    return re.sub(r"tumou?rs?$", "", key) or key


def canonical_class(name: str) -> str | None:
    """The canonical tumour class a folder name means, or None: 'no_tumor' -> 'notumor'."""
    key = class_key(name)
    return _CLASS_ALIASES.get(key)


@dataclass(frozen=True)
class ImageList:
    """Image files and integer labels, in a stable order (class, then file name)."""

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray  # (n,) int
    class_names: tuple[str, ...]
    folders: dict[str, str]  # folder name -> class name


def match_folders(folders: list[str], classes: tuple[str, ...] | None) -> dict[str, str]:
    """Map class folders to class names, canonical (classes=None) or as the config lists them."""
    if classes is None:
        mapping = {f: canonical_class(f) for f in folders}
        unknown = [f for f, c in mapping.items() if c is None]
        if unknown:
            raise DataError(
                f"folder(s) {', '.join(map(repr, unknown))} are not one of the tumour classes "
                f"{', '.join(CANONICAL_CLASSES)} under any spelling we know; if your dataset has other classes, "
                "list them in the config (data.classes, e.g. --set 'data.classes=[cat,dog]')"
            )
    else:
        wanted = {class_key(c): c for c in classes}
        mapping = {}
        for f in folders:
            c = wanted.get(class_key(f))
            if c is None:
                canon = canonical_class(f)
                c = next((w for w in classes if canonical_class(w) == canon), None) if canon else None
            if c is None:
                raise DataError(f"folder {f!r} matches none of the configured classes: {', '.join(classes)}")
            mapping[f] = c
    clash = {c for c in mapping.values() if list(mapping.values()).count(c) > 1}
    if clash:
        both = [f for f, c in mapping.items() if c in clash]
        raise DataError(f"folders {', '.join(map(repr, both))} all mean class {sorted(clash)[0]!r}; keep one")
    return mapping


def list_images(root: str | Path, classes: tuple[str, ...] | None = None, require_all: bool = True) -> ImageList:
    """List the images of a folder of class sub-folders.

    ``classes=None`` means the four canonical tumour classes in their fixed order. ``require_all=False`` lets an
    evaluation folder hold only some of the classes.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; pass --data DIR, a folder with one sub-folder per class")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise DataError(f"{root} has no class sub-folders; expected e.g. {root}/glioma/*.jpg, {root}/notumor/*.jpg")
    mapping = match_folders(folders, classes)
    class_names = tuple(classes) if classes is not None else CANONICAL_CLASSES
    missing = [c for c in class_names if c not in mapping.values()]
    if missing and require_all:
        raise DataError(
            f"{root} has no folder for class(es) {', '.join(missing)}; found folders {', '.join(folders)}. "
            "Add them, or list the classes you have in data.classes"
        )
    paths, labels = [], []
    for folder in folders:
        files = sorted(
            p for p in (root / folder).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        paths += [str(p) for p in files]
        labels += [class_names.index(mapping[folder])] * len(files)
    if not paths:
        raise DataError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {root}")
    return ImageList(root, tuple(paths), np.asarray(labels, dtype=np.int64), class_names, mapping)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float images scaled by their own maximum to 0-255 (zero stays black)."""
    arr = np.asarray(img, dtype=np.float64)
    top = float(arr.max()) if arr.size else 0.0
    if top > 255:
        arr = arr * (255.0 / top)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def decode(source: str | Path | bytes, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode an image into mode 'L' or 'RGB'. Raises DataError with the reason."""
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        if max_pixels is not None and img.width * img.height > max_pixels:
            raise DataError(f"image is {img.width}x{img.height} pixels, over the limit of {max_pixels:,}")
        img.load()
        img = ImageOps.exif_transpose(img)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the upload", str(e))
        raise DataError(f"not a readable image ({type(e).__name__}: {reason})") from e
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # MRI backgrounds are black: composite transparent pixels onto black, not white.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, rgba).convert("RGB")
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return img


def to_array(img: Image.Image, size: int, channels: int) -> np.ndarray:
    """Resize (squash, bilinear) and convert to a (size, size, channels) uint8 array."""
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def read_image(source: str | Path | bytes, size: int, channels: int = 3, max_pixels: int | None = None) -> np.ndarray:
    """One image as the (size, size, channels) uint8 array every model in this toolkit takes."""
    return to_array(decode(source, max_pixels), size, channels)


def pixel_digest(img: Image.Image) -> str:
    """Hash of the decoded pixels at full size: equal only for identical images, whatever the file bytes."""
    arr = np.asarray(img)
    if img.mode == "RGB" and _is_gray(img):
        arr = arr[..., 0]  # grayscale stored as RGB hashes like grayscale
    return hashlib.blake2b(arr.tobytes() + str(arr.shape).encode(), digest_size=16).hexdigest()


def _is_gray(img: Image.Image) -> bool:
    if img.mode == "L":
        return True
    arr = np.asarray(img)
    return bool(np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]))


@dataclass
class LoadedImages:
    """Decoded images ready for training: the in-memory uint8 cache plus what was skipped."""

    paths: list[str]
    labels: np.ndarray  # (n,) int
    images: np.ndarray  # (n, size, size, channels) uint8
    digests: list[str]  # pixel hash per image, for exact-duplicate groups
    class_names: tuple[str, ...]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def subset(self, idx: np.ndarray) -> LoadedImages:
        return LoadedImages(
            [self.paths[i] for i in idx], self.labels[idx], self.images[idx],
            [self.digests[i] for i in idx], self.class_names, [],
        )


def load_images(listing: ImageList, size: int, channels: int = 3, workers: int | None = None) -> LoadedImages:
    """Decode every listed image once (threads: Pillow releases the GIL), skipping unreadable files."""

    def work(path: str):
        try:
            img = decode(path)
            return to_array(img, size, channels), pixel_digest(img), None
        except DataError as e:
            return None, None, str(e)

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(work, listing.paths))
    keep = [i for i, r in enumerate(results) if r[0] is not None]
    skipped = [(listing.paths[i], r[2]) for i, r in enumerate(results) if r[0] is None]
    if not keep:
        raise DataError(f"none of the {len(listing.paths)} image files under {listing.root} could be read")
    images = np.stack([results[i][0] for i in keep]) if keep else np.zeros((0, size, size, channels), np.uint8)
    return LoadedImages(
        [listing.paths[i] for i in keep], listing.labels[keep], images,
        [results[i][1] for i in keep], listing.class_names, skipped,
    )


def split_train_val(labels: np.ndarray, groups: np.ndarray, val_split: float, seed: int):
    """Stratified train/validation indices that never put two copies of one image on both sides."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1 / val_split))
    counts = np.bincount(labels)
    small = [i for i, c in enumerate(counts) if 0 < c < 2]
    if small or len(labels) < n_splits:
        raise DataError("each class needs at least 2 readable images to make a validation split")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only N members"
        train_idx, val_idx = next(splitter.split(np.zeros(len(labels)), labels, groups))
    return np.sort(train_idx), np.sort(val_idx)


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
    """A function (batch float32 0-255) -> augmented batch.

    Rotation and zoom are one combined affine resampling (two Keras layers would resample twice, and resampling
    is most of the pipeline's cost); flips, brightness and contrast are Keras preprocessing layers.
    """
    import keras
    import tensorflow as tf

    layers = []
    mode = "horizontal_and_vertical" if cfg.flip_horizontal and cfg.flip_vertical else (
        "horizontal" if cfg.flip_horizontal else "vertical" if cfg.flip_vertical else None)
    if mode:
        layers.append(keras.layers.RandomFlip(mode, seed=seed))
    if cfg.brightness > 0:
        layers.append(keras.layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 3))
    if cfg.contrast > 0:
        layers.append(keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 4))
    rotation, zoom, erase_p = cfg.rotation, cfg.zoom, cfg.erasing

    def apply(x):
        if rotation > 0 or zoom > 0:
            x = _random_affine(x, rotation, zoom)
        for layer in layers:
            x = layer(x, training=True)
        if erase_p > 0:
            x = _random_erase(x, erase_p)
        return tf.clip_by_value(x, 0.0, 255.0)

    return apply


def _random_affine(x, rotation: float, zoom: float):
    """Rotate by up to +-rotation of a full turn and magnify by 1 +- zoom about the centre, in one resampling."""
    import math

    import tensorflow as tf

    shape = tf.shape(x)
    b = shape[0]
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    theta = tf.random.uniform([b], -rotation, rotation) * 2.0 * math.pi
    scale = tf.random.uniform([b], 1.0 - zoom, 1.0 + zoom)
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    # maps each output pixel to the input pixel it samples: rotate and shrink about the centre
    transforms = tf.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy,
                           tf.zeros([b]), tf.zeros([b])], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=shape[1:3], fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT")


def _random_erase(x, p: float):
    """Blank one random rectangle (a quarter to a sixteenth of the image) in a fraction p of the images."""
    import tensorflow as tf

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
):
    """Batches of (float32 0-255 images, one-hot labels); shuffled and augmented when training."""
    import tensorflow as tf

    # The uint8 array is the cache. Shuffle and batch indices, then gather each batch: a shuffle buffer of
    # images would hold a second copy of the whole dataset.
    images_t = tf.convert_to_tensor(images)
    labels_t = tf.convert_to_tensor(np.asarray(labels, dtype=np.int64))
    ds = tf.data.Dataset.range(len(labels))
    if training:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda i: (tf.cast(tf.gather(images_t, i), tf.float32),
                           tf.one_hot(tf.gather(labels_t, i), num_classes)), num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment is not None:
        aug = augmenter(augment, seed)
        ds = ds.map(lambda x, y: (aug(x), y), num_parallel_calls=tf.data.AUTOTUNE)
        if augment.mixup > 0:  # blends image pairs and their labels within each batch (Keras' MixUp layer)
            import keras

            mix = keras.layers.MixUp(alpha=augment.mixup, seed=seed + 5)

            def mixup(x, y):
                out = mix({"images": x, "labels": y}, training=True)
                return out["images"], out["labels"]

            ds = ds.map(mixup, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
