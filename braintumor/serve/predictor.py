"""Inference on uploaded bytes: a run's model behind one compiled call, its exact preprocessing, Grad-CAM.

No FastAPI here: the load benchmark and any other caller use the same object the server does.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from .. import __version__
from ..data import find_class, read_image
from ..errors import DataError, ModelError, did_you_mean
from ..explain import gradcam, render
from ..models.loading import load_run
from ..scanners import ScanOptions


class UploadTooLarge(DataError):
    """An upload over the byte or pixel limit (a decompression bomb, or just too big)."""

    status_code = 413


class UnknownClass(DataError):
    """A ``class=`` the model does not have."""

    status_code = 422


def check_bytes(data: bytes, max_bytes: int, what: str = "file") -> None:
    """Reject empty uploads and uploads over ``max_bytes`` with a message that says what to do."""
    if not data:
        raise DataError(f"{what} is empty: send the image file's content (curl -F file=@scan.jpg)")
    if len(data) > max_bytes:
        raise UploadTooLarge(f"{what} is over the upload limit of {human_bytes(max_bytes)}; send a smaller "
                             "image, or raise --max-upload-bytes")


def check_pixels(data: bytes, max_pixels: int) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` pixels, before anything is decoded.

    Files Pillow cannot even open pass through: ``read_image`` then says why they are unreadable.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except Image.DecompressionBombError as e:  # Pillow's own, far higher, limit
        raise UploadTooLarge(f"image is over the pixel limit of {max_pixels:,} ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return
    if w * h > max_pixels:
        raise UploadTooLarge(f"image is {w}x{h} pixels, over the limit of {max_pixels:,}; downscale it, or "
                             "raise --max-pixels")


def human_bytes(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1024 * 1024 else f"{n:,} bytes"


def png_bytes(rgb: np.ndarray) -> bytes:
    """(h, w, 3) uint8 -> PNG file content."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def finite_or_none(obj: Any) -> Any:
    """JSON has no NaN: metrics such as AUC on a one-class split are NaN, and become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


class Predictor:
    """A loaded train run ready to classify uploads. Thread-safe: the compiled call holds no Python state."""

    def __init__(self, run, max_pixels: int = 40_000_000):
        self.run = run
        self.model = run.model
        self.class_names = run.class_names
        self.size = run.image_size
        self.channels = run.channels
        self.max_pixels = max_pixels
        self.scan = ScanOptions.from_config(run.config.data)  # a DICOM/NIfTI upload: the run's window
        model = self.model
        # One trace for every batch size; model(x, training=False) avoids predict()'s per-call dataset set-up.
        self._call = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, self.size, self.size, self.channels), tf.float32)],
            jit_compile=False, reduce_retracing=True,
        )
        self.ready = False

    @classmethod
    def load(cls, run_dir: str | Path, max_pixels: int = 40_000_000, warm: bool = True) -> Predictor:
        """Load a train run's model (Keras safe mode) and warm it up."""
        predictor = cls(load_run(run_dir), max_pixels)
        if warm:
            predictor.warm_up()
        return predictor

    def warm_up(self) -> None:
        """Trace and run the compiled call once, so the first request does not pay for it."""
        self.infer(np.zeros((1, self.size, self.size, self.channels), np.uint8))
        self.ready = True

    def warm_up_cam(self) -> None:
        """Run Grad-CAM once (building its gradient graph); raises whatever cam raises."""
        self._check_explainable()
        gradcam.gradcam(self.model, np.zeros((self.size, self.size, self.channels), np.float32), class_index=0)

    # --- the steps of a request ---------------------------------------------------------------------------

    def image(self, data: bytes) -> np.ndarray:
        """Upload bytes -> (size, size, channels) uint8, exactly as training decoded its images."""
        if not data:
            raise DataError("file is empty: send the image file's content (curl -F file=@scan.jpg)")
        check_pixels(data, self.max_pixels)
        return read_image(data, self.size, self.channels, max_pixels=self.max_pixels, scan=self.scan)

    def infer(self, images: np.ndarray) -> np.ndarray:
        """(n, size, size, channels) 0-255 -> (n, classes) float64 probabilities."""
        x = np.asarray(images, dtype=np.float32)
        return np.asarray(self._call(x), dtype=np.float64)

    def probabilities(self, probs: np.ndarray) -> dict[str, float]:
        return {c: round(float(p), 6) for c, p in zip(self.class_names, probs, strict=True)}

    def predict(self, data: bytes) -> tuple[int, dict[str, float]]:
        """One upload -> (class index, {class: probability})."""
        probs = self.infer(self.image(data)[None])[0]
        return int(np.argmax(probs)), self.probabilities(probs)

    def predict_many(self, blobs: list[bytes]) -> list[tuple[int, dict[str, float]]]:
        """Several uploads in one model call; the first unreadable one fails them all, naming its position."""
        images = []
        for i, data in enumerate(blobs, start=1):
            try:
                images.append(self.image(data))
            except DataError as e:
                raise type(e)(f"file {i} of {len(blobs)}: {e}") from None
        probs = self.infer(np.stack(images))
        return [(int(np.argmax(p)), self.probabilities(p)) for p in probs]

    def class_index(self, value: str | None) -> int | None:
        """``class=`` as a class name (any case) or a 0-based index; None means the predicted class."""
        if value is None or value == "":
            return None
        index = find_class(value.strip(), self.class_names)
        if index is not None:
            return index
        if value.strip().isdigit() and int(value) < len(self.class_names):
            return int(value)
        hint = did_you_mean(value, self.class_names, n=1, cutoff=0.6, ignore_case=True)
        raise UnknownClass(f"unknown class {value!r}{hint}; this model's classes are "
                           f"{', '.join(self.class_names)} (or their index 0-{len(self.class_names) - 1})")

    def _check_explainable(self) -> None:
        if "ensemble_of" in self.run.meta:
            raise ModelError("this server runs a k-fold ensemble, and Grad-CAM explains one model: serve one of "
                             f"its folds for /cam (--run {self.run.path / self.run.meta['ensemble_of'][0]})")

    def cam(self, data: bytes, class_name: str | None = None) -> tuple[bytes, int, float]:
        """Grad-CAM overlay PNG for one upload: (png, explained class index, its probability)."""
        self._check_explainable()
        target = self.class_index(class_name)  # before any work: a bad class= costs nothing
        image = self.image(data)
        probs = self.infer(image[None])[0]
        index = int(np.argmax(probs)) if target is None else target
        heatmap = gradcam.gradcam(self.model, image.astype(np.float32), class_index=index)
        return png_bytes(render.overlay(image, heatmap)), index, float(probs[index])

    # --- description -------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What /model reports: architecture, classes, input, preprocessing, training metrics, versions."""
        meta = self.run.meta
        metrics = {}
        path = Path(self.run.path) / "metrics.json"
        if path.is_file():
            m = json.loads(path.read_text())
            keep = ("n", "accuracy", "accuracy_ci95", "loss", "auc", "macro_f1", "per_class")
            metrics = {k: m[k] for k in keep if k in m}
        return finite_or_none({
            "arch": meta.get("arch", self.run.config.model.arch),
            "classes": self.class_names,
            "input": {"height": self.size, "width": self.size, "channels": self.channels,
                      "dtype": "uint8 0-255 (any image is decoded and resized, squashed, to this)"},
            "preprocessing": meta.get("preprocessing", "unknown"),
            "metrics": metrics,
            "run": Path(self.run.path).name,  # the name only: server paths are not a client's business
            "trained": meta.get("finished"),
            "version": {"braintumor": __version__, "trained_with": meta.get("versions", {}),
                        "git_commit": meta.get("git_commit")},
        })
