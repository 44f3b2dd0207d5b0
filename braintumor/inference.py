"""Classifying images with a saved run: calibrated probabilities and the out-of-distribution gate, in one pass.

Every consumer (``predict``, ``evaluate``, ``serve``, the k-fold ensemble) goes through ``Classifier``, so they all
give the same answer for the same image: the model's probabilities, averaged over a horizontal flip with TTA,
softened by the run's temperature (``calibration.json``), and a status from the run's gate (``gate.json``,
``gate.npz``). The gate's features come from the same forward pass as the probabilities (a second output of one
Keras model), so it costs a few matrix products, not a second network call.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from .decision import Decider, Verdict
from .explain.graph import check_layer, last_conv_layer
from .input_checks import DEFAULT_MODALITIES, InputStats
from .ood import STATUSES, Gate

__all__ = ["Classifier", "Verdict", "feature_layer", "gate_layers", "gate_report", "layer_widths", "pooled_features",
           "scoring_model"]


def feature_layer(model) -> str:
    """The layer whose (globally average-pooled) output the gate reads: the layer Grad-CAM explains by default,
    the network's last spatial feature map."""
    return last_conv_layer(model)


def gate_layers(cfg, model) -> list[str]:
    """The layers the gate reads: ``eval.gate_layers`` (each checked to be a feature map of ``model``: the error
    lists the valid names), or the last feature map (``feature_layer``)."""
    for name in cfg.eval.gate_layers:
        check_layer(model, name)
    return list(cfg.eval.gate_layers) or [feature_layer(model)]


def layer_widths(model, layers: list[str]) -> list[int]:
    """The channel count of each layer's output: its pooled feature width."""
    return [int(model.get_layer(n).output.shape[-1]) for n in layers]


def scoring_model(model, layer: str | list[str] | None = None):
    """A Keras model returning [probabilities, pooled features of ``layer``] from one forward pass; a list of
    layers gives their pooled outputs concatenated, in order (still one features output)."""
    layers = [layer or feature_layer(model)] if layer is None or isinstance(layer, str) else list(layer)
    if len(layers) == 1:
        features = keras.layers.GlobalAveragePooling2D(name="gate_features")(model.get_layer(layers[0]).output)
    else:
        features = keras.layers.Concatenate(name="gate_features")(
            [keras.layers.GlobalAveragePooling2D(name=f"gate_pool_{i}")(model.get_layer(n).output)
             for i, n in enumerate(layers)])
    return keras.Model(model.inputs, [model.outputs[0], features], name=f"{model.name}_scoring")


def pooled_features(model, images: np.ndarray, batch_size: int = 64, layer: str | list[str] | None = None
                    ) -> np.ndarray:
    """(n, d) the gate's features (see ``feature_layer``) of (n, h, w, c) uint8 images."""
    scorer = scoring_model(model, layer)
    out = [np.asarray(scorer.predict_on_batch(np.asarray(images[i:i + batch_size], np.float32))[1], np.float64)
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, int(scorer.outputs[1].shape[-1])))


def gate_report(verdicts: list[Verdict], labels: np.ndarray | None, where: str) -> dict[str, Any]:
    """Status counts, the refused share and (with labels) accuracy on all and on the accepted images."""
    status = np.array([v.status for v in verdicts])
    out: dict[str, Any] = {"on": where, "status_counts": {s: int((status == s).sum()) for s in STATUSES},
                           "refused": float(np.mean(status != "ok")) if len(status) else float("nan")}
    if labels is not None and len(verdicts):
        correct = np.array([int(np.argmax(v.probs)) for v in verdicts]) == np.asarray(labels)
        ok = status == "ok"
        out["accuracy_all"] = float(correct.mean())
        out["accuracy_accepted"] = float(correct[ok].mean()) if ok.any() else None
    return out


class Classifier(Decider):
    """A run's model with its temperature and gate (either may be missing: older runs); the decision itself is
    ``Decider``'s (NumPy only, shared with the exported-model server)."""

    def __init__(self, model, temperature: float = 1.0, gates: list[Gate] | None = None,
                 members: list | None = None, modalities: tuple[str, ...] | None = DEFAULT_MODALITIES):
        super().__init__(temperature, gates, modalities)
        if self.gates and members is None:
            members = [model]
        if self.gates:
            parts = [scoring_model(m, g.feature_layer) for m, g in zip(members, self.gates, strict=True)]
            if len(parts) == 1:
                self.model = parts[0]
            else:  # an ensemble: mean probabilities, each member's features
                inputs = keras.Input(shape=model.inputs[0].shape[1:], name="image")
                outs = [p(inputs) for p in parts]
                probs = keras.layers.Average(name="ensemble_mean")([o[0] for o in outs])
                self.model = keras.Model(inputs, [probs, *[o[1] for o in outs]], name="ensemble_scoring")
        else:
            self.model = model

    def raw(self, images: np.ndarray, tta: bool = False, batch_size: int = 64) -> tuple[np.ndarray, list]:
        """(uncalibrated probabilities (n, classes), one (n, d) feature array per gate) for uint8 images."""
        probs, feats = [], []
        for start in range(0, len(images), batch_size):
            x = np.asarray(images[start:start + batch_size], dtype=np.float32)
            out = self.model.predict_on_batch(x)
            out = out if isinstance(out, (list, tuple)) else [out]
            p = np.asarray(out[0], dtype=np.float64)
            if tta:  # features of the image as it came; probabilities averaged with its mirror image
                flipped = self.model.predict_on_batch(x[:, :, ::-1])
                flipped = flipped if isinstance(flipped, (list, tuple)) else [flipped]
                p = (p + np.asarray(flipped[0], dtype=np.float64)) / 2
            probs.append(p)
            feats.append([np.asarray(f, dtype=np.float64) for f in out[1:]])
        k = int(self.model.outputs[0].shape[-1])
        if not probs:
            return np.zeros((0, k)), [np.zeros((0, 1)) for _ in self.gates]
        return np.concatenate(probs), [np.concatenate([f[i] for f in feats]) for i in range(len(self.gates))]

    def classify(self, images: np.ndarray, stats: list[InputStats | None] | None = None,
                 tta: bool = False) -> list[Verdict]:
        """A verdict per (n, h, w, c) uint8 image; ``stats`` are the input checks' figures of each decoded image
        (None where only the resized array is known)."""
        raw, feats = self.raw(images, tta)
        return self.from_raw(raw, feats, stats)
