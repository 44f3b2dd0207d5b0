"""A saved run as a classifier: its scoring model (probabilities and the gate's features from one forward pass),
its temperature (``calibration.json``) and its gate (``gate.json``, ``gate.npz``).

Every consumer (``predict``, ``evaluate``, ``serve``, the k-fold ensemble) runs a ``Classifier`` through
``engine.scorer.classify``, so they all give the same answer for the same image: the model's probabilities,
averaged over a horizontal flip with TTA, softened by the temperature, and a status from the gate. The gate's
features are a second output of one Keras model, so the gate costs a few matrix products, not a second network call.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from .decision import Decider, Doubt, Verdict
from .explain.graph import check_layer, last_conv_layer
from .input_checks import DEFAULT_MODALITIES
from .ood import STATUSES, Gate

__all__ = ["Classifier", "Verdict", "feature_layer", "gate_layers", "gate_report", "head_layers", "layer_widths",
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


def head_layers(cfg, model, taken: list[str]) -> list[str]:
    """The layers the brain-MRI-or-not head adds to the gate's pooled features (gate_head.py), those in ``taken``
    (the distance's) left out: ``eval.gate_head_layers`` (checked), or every block end: the last feature map
    at each spatial resolution the network passes through (for CustomNet, each block's end)."""
    for name in cfg.eval.gate_head_layers:
        check_layer(model, name)
    names = list(cfg.eval.gate_head_layers)
    if not names:
        ends: dict[tuple, str] = {}
        for layer in model.layers:
            shape = getattr(layer, "output", None) is not None and tuple(layer.output.shape)
            if shape and len(shape) == 4 and not isinstance(layer, keras.layers.InputLayer):
                ends[shape[1:3]] = layer.name  # later layers at the same resolution replace earlier ones
        names = [n for n in ends.values() if n in _feature_maps(model)]
    return [n for n in names if n not in taken]


def _feature_maps(model) -> set[str]:
    """Layers with weights upstream: not the input nor the preprocessing (their pooled output is the image's
    mean gray level, which the input checks already read)."""
    out, seen_weights = set(), False
    for layer in model.layers:
        seen_weights = seen_weights or bool(layer.weights) and not isinstance(layer, keras.layers.InputLayer)
        if seen_weights:
            out.add(layer.name)
    return out


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


def gate_report(verdicts: list[Verdict], labels: np.ndarray | None, where: str) -> dict[str, Any]:
    """Status counts, the refused share and (with labels) accuracy on all and on the accepted images."""
    status = np.array([v.status for v in verdicts])
    out: dict[str, Any] = {"on": where, "status_counts": {s: int((status == s).sum()) for s in STATUSES},
                           "refused": float(np.mean(status != "ok")) if len(status) else float("nan"),
                           "notumor_doubt_withdrew": sum(v.doubted for v in verdicts)}
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
                 members: list | None = None, modalities: tuple[str, ...] | None = DEFAULT_MODALITIES,
                 doubt: Doubt | None = None):
        super().__init__(temperature, gates, modalities, doubt)
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
