"""Inference on uploaded bytes: a model behind one call, the run's exact preprocessing, the calibrated verdict.

The model runs in a backend: ``keras_backend.KerasBackend`` (a train or k-fold run, TensorFlow, Grad-CAM) or
``OnnxBackend`` (an exported ``model.onnx`` in ONNX Runtime, no TensorFlow anywhere). Both return the run's
probabilities and the gate's features from one forward pass; the verdict is ``decision.Decider``'s either way.
No FastAPI here: the load benchmark and any other caller use the same object the server does.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import __version__
from ..data import find_class
from ..decision import Decider, Verdict
from ..engine import scorer
from ..errors import DataError, ModelError, did_you_mean
from ..exported import OnnxScorer, load_exported
from ..input_checks import InputStats
from ..runs import json_safe


class UploadTooLarge(DataError):
    """An upload over the byte or pixel limit (a decompression bomb, or just too big)."""

    status_code = 413


class UnknownClass(DataError):
    """A ``class=`` the model does not have."""

    status_code = 422


class CamUnavailable(ModelError):
    """Grad-CAM needs the Keras model's gradients; an exported model has none."""

    status_code = 501


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


class OnnxBackend:
    """An exported ONNX model in ONNX Runtime. No Grad-CAM: that needs the Keras model's gradients."""

    kind = "onnx"

    def __init__(self, run, threads: int | None = None, notumor_doubt: float | None = None):
        self.model = OnnxScorer(run.model_file, threads)
        self.decider = run.decider(notumor_doubt)
        self.file = run.model_file.name
        self.tta = run.tta  # the source run's eval.tta, as the Keras server and predict apply it

    def scores(self, images: np.ndarray) -> scorer.Scores:
        return scorer.score(self.model, images, len(images), self.tta)  # a request's images in one call

    def warm_up_cam(self) -> None:
        pass

    def cam(self, image: np.ndarray, index: int) -> np.ndarray:
        self.check_cam()

    def describe_cam(self) -> None:
        return None  # no /cam without the Keras model

    def check_cam(self) -> None:
        raise CamUnavailable(f"Grad-CAM needs the Keras model, and this server runs the exported {self.file}: "
                             "serve the source run (braintumor serve --run DIR) for /cam")


class Predictor:
    """A loaded model ready to classify uploads. Thread-safe: the backend's call holds no Python state."""

    def __init__(self, run, backend, max_pixels: int = 40_000_000):
        self.run = run
        self.backend = backend
        self.decider: Decider = backend.decider
        self.class_names = run.class_names
        self.size = run.image_size
        self.channels = run.channels
        self.spec = run.spec
        self.max_pixels = max_pixels
        self.ready = False

    @property
    def model(self):
        """The backend's model: the Keras classifier (probabilities only), or the ONNX scorer."""
        return self.backend.model

    @classmethod
    def load(cls, run_dir: str | Path, max_pixels: int = 40_000_000, warm: bool = True,
             notumor_doubt: float | None = None) -> Predictor:
        """A train or k-fold run's Keras model (safe mode) with its temperature and gate, warmed up;
        ``notumor_doubt`` overrides the run's ``eval.notumor_doubt``."""
        from .keras_backend import KerasBackend, load_run  # lazy: TensorFlow; the ONNX server never imports it

        run = load_run(run_dir).with_notumor_doubt(notumor_doubt)
        predictor = cls(run, KerasBackend(run), max_pixels)
        if warm:
            predictor.warm_up()
        return predictor

    @classmethod
    def load_exported(cls, model_file: str | Path, max_pixels: int = 40_000_000, warm: bool = True,
                      threads: int | None = None, notumor_doubt: float | None = None) -> Predictor:
        """An exported ``model.onnx`` (``braintumor export``) in ONNX Runtime, warmed up; ``notumor_doubt``
        overrides the export's ``eval.notumor_doubt``."""
        run = load_exported(model_file)
        if run.export["format"] != "onnx":
            raise ModelError(f"{model_file} is a {run.export['format']} export; the server runs ONNX exports "
                             "(braintumor export RUN --format onnx) or a run directory (--run)")
        predictor = cls(run, OnnxBackend(run, threads, notumor_doubt), max_pixels)
        if warm:
            predictor.warm_up()
        return predictor

    def warm_up(self) -> None:
        """Run the model once, so the first request does not pay for tracing or session set-up."""
        self.backend.scores(np.zeros((1, self.size, self.size, self.channels), np.uint8))
        self.ready = True

    def warm_up_cam(self) -> None:
        """Run Grad-CAM once (building its gradient graph); raises whatever cam raises."""
        self.backend.warm_up_cam()

    # --- the steps of a request ---------------------------------------------------------------------------

    def image(self, data: bytes) -> tuple[np.ndarray, InputStats]:
        """Upload bytes -> ((size, size, channels) uint8 exactly as training prepared its images, the gate's
        input-check figures of the decoded image before any framing or resizing)."""
        if not data:
            raise DataError("file is empty: send the image file's content (curl -F file=@scan.jpg)")
        check_pixels(data, self.max_pixels)
        return self.spec.read(data, self.max_pixels)  # a DICOM/NIfTI upload: the run's window and slice

    def infer(self, images: np.ndarray) -> np.ndarray:
        """(n, size, size, channels) 0-255 -> (n, classes) float64 calibrated probabilities."""
        return np.stack([v.probs for v in self.classify(images)])

    def classify(self, images: np.ndarray, stats: list[InputStats | None] | None = None) -> list[Verdict]:
        """One forward pass (probabilities and gate features), then the run's temperature and gate."""
        raw, feats = self.backend.scores(images)
        return self.decider.from_raw(raw, feats, stats)

    def probabilities(self, probs: np.ndarray) -> dict[str, float]:
        return {c: round(float(p), 6) for c, p in zip(self.class_names, probs, strict=True)}

    def answer(self, v: Verdict) -> dict[str, Any]:
        """What /predict says about one image: the class only when the gate lets it through."""
        top = int(np.argmax(v.probs))
        return {"status": v.status, "reason": v.reason, "answered": v.answered,
                "class": self.class_names[top] if v.answered else None, "probabilities": self.probabilities(v.probs),
                "distance_ratio": None if v.ratio is None else round(v.ratio, 4),
                "head_margin": None if v.head is None else round(v.head, 4)}

    def predict(self, data: bytes) -> Verdict:
        """One upload -> its verdict (status, reason, calibrated probabilities)."""
        image, stats = self.image(data)
        return self.classify(image[None], [stats])[0]

    def predict_many(self, blobs: list[bytes]) -> list[Verdict]:
        """Several uploads in one model call; the first unreadable one fails them all, naming its position."""
        images, stats = [], []
        for i, data in enumerate(blobs, start=1):
            try:
                image, s = self.image(data)
            except DataError as e:
                raise type(e)(f"file {i} of {len(blobs)}: {e}") from None
            images.append(image)
            stats.append(s)
        return self.classify(np.stack(images), stats)

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

    def cam(self, data: bytes, class_name: str | None = None) -> tuple[bytes, int, float]:
        """Grad-CAM overlay PNG for one upload: (png, explained class index, its calibrated probability)."""
        self.backend.check_cam()  # 501 (exported model) or 400 (ensemble) before any work
        target = self.class_index(class_name)  # before any work: a bad class= costs nothing
        image, stats = self.image(data)
        probs = self.classify(image[None], [stats])[0].probs
        index = int(np.argmax(probs)) if target is None else target
        return png_bytes(self.backend.cam(image, index)), index, float(probs[index])

    # --- description -------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What /model reports: architecture, classes, input, preprocessing, the decision (temperature, gate),
        training metrics, versions and what runs the model."""
        meta = self.run.meta
        metrics = {}
        path = Path(self.run.path) / "metrics.json"
        if path.is_file():
            m = json.loads(path.read_text())
            keep = ("n", "accuracy", "accuracy_ci95", "loss", "auc", "macro_f1", "per_class")
            metrics = {k: m[k] for k in keep if k in m}
        return json_safe({  # JSON has no NaN: an AUC on a one-class split is null
            "arch": meta.get("arch", "unknown"),
            "classes": self.class_names,
            "input": {"height": self.size, "width": self.size, "channels": self.channels,
                      "dtype": "uint8 0-255 (any image is decoded and resized, squashed, to this)"},
            "preprocessing": meta.get("preprocessing", "unknown"),
            "decision": self.decider.describe(),
            "explanation": self.backend.describe_cam(),
            "metrics": metrics,
            "run": Path(self.run.path).name,  # the name only: server paths are not a client's business
            "runtime": self.backend.kind,
            "trained": meta.get("finished"),
            "version": {"braintumor": __version__, "trained_with": meta.get("versions", {}),
                        "git_commit": meta.get("git_commit")},
        })
