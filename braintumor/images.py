"""Images in: one decode path for every format (Pillow; DICOM and NIfTI through scanners/), the framing a run
applies (brain crop, percentile normalisation), and the uint8 model input every consumer feeds.

Images are decoded with Pillow (it reads every kind users bring: grayscale, RGBA, palette, 16-bit, BMP, CMYK JPEG)
into mode 'L' or 'RGB'; ``ImageSpec`` turns that into the (size, size, channels) uint8 array a model takes.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import DataConfig
from .errors import DataError
from .input_checks import InputStats
from .scanners import ScanOptions, decode_scanner, source_kind


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float images scaled by their own maximum to 0-255 (zero stays black)."""
    arr = np.asarray(img, dtype=np.float64)
    top = float(arr.max()) if arr.size else 0.0
    if top > 255:
        arr = arr * (255.0 / top)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def decode(source: str | Path | bytes, max_pixels: int | None = None,
           scan_options: ScanOptions = ScanOptions()) -> Image.Image:
    """Open and fully decode an image into mode 'L' or 'RGB'. Raises DataError with the reason.

    A DICOM or NIfTI source (a path, a ``<file>#<slice>`` id from list_images, or an upload's bytes) is one slice,
    windowed to 8-bit mode 'L' as ``scan_options`` says."""
    if source_kind(source):
        return decode_scanner(source, scan_options, max_pixels)
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


PixelBox = tuple[int, int, int, int]  # (left, top, right, bottom) in the decoded image's pixels


def brain_box(img: Image.Image, margin: float = 0.04) -> PixelBox:
    """The square around the head: rows and columns with foreground (above 10% of the bright end), widened by
    ``margin`` of its side. It may reach past the image (cropping pads with black); a dark image keeps its frame.

    Why: the training folder mixes collections whose framing differs by class (small heads in wide black
    borders, tight crops); cropping to the head gives every image the same framing and the brain more pixels."""
    gray = np.asarray(img.convert("L"), dtype=np.float32)
    h, w = gray.shape
    top = float(np.percentile(gray, 99)) if gray.size else 0.0
    fg = gray > max(10.0, 0.1 * top)
    rows = np.flatnonzero(fg.sum(axis=1) > 0.01 * w)  # ignore stray bright pixels and thin labels
    cols = np.flatnonzero(fg.sum(axis=0) > 0.01 * h)
    if len(rows) < 2 or len(cols) < 2:
        return (0, 0, w, h)
    cy, cx = (rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2
    half = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) * (1 + 2 * margin) / 2
    return (int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half)))


def normalize_intensity(img: Image.Image) -> Image.Image:
    """Stretch the image's 0.5-99.5 percentiles to 0-255 (the collections differ in brightness by class)."""
    arr = np.asarray(img, dtype=np.float32)
    lo, hi = np.percentile(arr, [0.5, 99.5])
    if hi - lo < 1:
        return img
    return Image.fromarray(np.clip((arr - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8), mode=img.mode)


@dataclass(frozen=True)
class ImageSpec:
    """How a run turns a decoded image into model input: framing (``crop``, ``normalize``), then a square
    resize to ``size`` with ``channels``. Stored in the run's config, so every consumer prepares images alike."""

    size: int
    channels: int = 3
    crop: str = "none"  # none | brain
    normalize: str = "none"  # none | percentile
    # how DICOM and NIfTI files become 8-bit slices; called scan, not scan_options, because an exported model's
    # spec stores it under that key (exported.py, commands/export.py)
    scan: ScanOptions = ScanOptions()

    @classmethod
    def of(cls, data: DataConfig) -> ImageSpec:
        return cls(data.image_size, 1 if data.color_mode == "grayscale" else 3, data.crop, data.normalize,
                   ScanOptions.from_config(data))

    def frame(self, img: Image.Image) -> tuple[Image.Image, PixelBox]:
        """The decoded image as the model sees it before resizing, and where that lies in the decoded image."""
        box = brain_box(img) if self.crop == "brain" else (0, 0, img.width, img.height)
        if box != (0, 0, img.width, img.height):
            img = img.crop(box)
        if self.normalize == "percentile":
            img = normalize_intensity(img)
        return img, box

    def prepare(self, img: Image.Image) -> tuple[np.ndarray, PixelBox]:
        """(the (size, size, channels) uint8 model input, the framing box in the decoded image)."""
        framed, box = self.frame(img)
        return to_array(framed, self.size, self.channels), box

    def read(self, source: str | Path | bytes, max_pixels: int | None = None) -> tuple[np.ndarray, InputStats]:
        """(model input, the gate's input-check figures) of one image file, scanner slice or upload."""
        img = decode(source, max_pixels, self.scan)
        return self.prepare(img)[0], InputStats.of(img)


def unframe(heatmap: np.ndarray, box: PixelBox, width: int, height: int) -> np.ndarray:
    """A map over the framed image, placed back on the decoded image's (height, width) grid (zero outside)."""
    left, top, right, bottom = box
    inside = np.asarray(Image.fromarray(np.asarray(heatmap, np.float32), mode="F")
                        .resize((right - left, bottom - top), Image.BILINEAR))
    out = np.zeros((height, width), np.float32)
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = inside[y0 - top:y1 - top, x0 - left:x1 - left]
    return out


def read_image(source: str | Path | bytes, spec: ImageSpec, max_pixels: int | None = None) -> np.ndarray:
    """One image as the (size, size, channels) uint8 array every model in this toolkit takes."""
    return spec.read(source, max_pixels)[0]


def pixel_digest(img: Image.Image) -> str:
    """Hash of the decoded pixels at full size: equal only for identical images, whatever the file bytes."""
    arr = np.asarray(img)
    if img.mode == "RGB" and is_gray(img):
        arr = arr[..., 0]  # grayscale stored as RGB hashes like grayscale
    return hashlib.blake2b(arr.tobytes() + str(arr.shape).encode(), digest_size=16).hexdigest()


def is_gray(img: Image.Image) -> bool:
    """Grayscale, or RGB with three equal channels (grayscale stored as RGB)."""
    if img.mode == "L":
        return True
    arr = np.asarray(img)
    return bool(np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]))
