"""The Keras backend of the server: a run's scoring model (probabilities + gate features) behind one compiled
call, and Grad-CAM. Imports TensorFlow: only ``Predictor.load`` reaches it, never the ONNX server."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ..engine import scorer
from ..errors import ModelError
from ..explain import gradcam, render
from ..models.loading import LoadedRun, load_run

__all__ = ["KerasBackend", "load_run"]


class KerasBackend:
    kind = "keras"

    def __init__(self, run: LoadedRun):
        self.run = run
        self.model = run.model  # probabilities only: what Grad-CAM explains
        self.decider = run.classifier  # a Classifier is a Decider with the run's temperature and gate(s)
        # [probabilities, *features] in one forward pass when there is a gate; one trace for every batch size
        # (model(x, training=False) avoids predict()'s per-call dataset set-up)
        self._call = scorer.compiled(run.classifier.model, run.image_size, run.channels)
        self.tta = bool(run.config.eval.tta)  # the flip average predict and evaluate apply: the same answers

    def scores(self, images: np.ndarray) -> scorer.Scores:
        return scorer.score(self._call, images, len(images), self.tta)  # a request's images in one call

    def check_cam(self) -> None:
        if "ensemble_of" in self.run.meta:
            raise ModelError("this server runs a k-fold ensemble, and Grad-CAM explains one model: serve one of "
                             f"its folds for /cam (--run {self.run.path / self.run.meta['ensemble_of'][0]})")

    def warm_up_cam(self) -> None:
        self.check_cam()
        size, channels = self.run.image_size, self.run.channels
        method, layers = self.explanation
        gradcam.class_activation_map(self.model, np.zeros((size, size, channels), np.float32), 0, layers, method)

    @cached_property
    def explanation(self) -> tuple[str, list[str]]:
        """(method, layers) /cam draws: the run's eval.cam_* choice, else the architecture's, as `cam` does."""
        return gradcam.default_explanation(self.model, self.run.config.eval.cam_method,
                                           self.run.config.eval.cam_layers)

    def describe_cam(self) -> dict | None:
        """What /model says /cam draws; None for a k-fold ensemble (no /cam)."""
        if "ensemble_of" in self.run.meta:
            return None
        method, layers = self.explanation
        return {"method": method, "layers": layers}

    def cam(self, image: np.ndarray, index: int) -> np.ndarray:
        """(size, size, 3) uint8 overlay of where the model looked for class ``index``."""
        self.check_cam()
        method, layers = self.explanation
        heatmap = gradcam.class_activation_map(self.model, image.astype(np.float32), index, layers, method)
        return render.overlay(image, heatmap)
