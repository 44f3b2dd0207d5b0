"""Grad-CAM, Grad-CAM++ and LayerCAM heatmaps (pure: a model and an image in, arrays out).

Gradients come from a sub-model returning [feature map, input of the classifier's last layer], so the score
explained is the pre-softmax logit (a confident softmax saturates and its gradient vanishes). Our registry
models are flat, but a user's model whose backbone is a nested sub-model works too: graph.py cuts the outer
graph around the sub-model (KERAS-NOTES.md).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from PIL import Image

from ..errors import ConfigError, DataError, ModelError
from ..models import available, get_spec
from .graph import check_layer, head_of, last_conv_layer, split_at

METHODS = ("gradcam", "gradcam++", "layercam")


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {layer name: step}


_LOCK = threading.Lock()


def explainer(model, layer_name: str) -> Callable:
    """(x, class index or -1 for the predicted) -> (feature map, its gradients, probabilities, class index).

    Built and traced once per (model, layer) and cached: later calls run as one compiled graph.
    """
    with _LOCK:
        per_model = _CACHE.setdefault(model, {})
        if layer_name not in per_model:
            path, layer = check_layer(model, layer_name)
            target, head = head_of(model)
            features = split_at(path, layer, target)

            @tf.function(reduce_retracing=True)
            def step(x, class_index):
                with tf.GradientTape() as tape:
                    feats, h = features(x)
                    logits, probs = head(h)
                    predicted = tf.argmax(probs[0], output_type=tf.int32)
                    index = tf.where(class_index < 0, predicted, class_index)
                    score = tf.gather(logits[0], index)  # the pre-softmax score of the explained class
                grads = tape.gradient(score, feats)
                if grads is None:  # (at trace time) a layer after the feature maps, or off the class path
                    raise ModelError(f"the class score does not depend on layer {layer_name!r}; choose a "
                                     "layer before the classifier head")
                return feats, grads, probs, index

            per_model[layer_name] = step
        return per_model[layer_name]


@dataclass(frozen=True)
class Explanation:
    """One image explained: the heatmap and what the model said about the image."""

    heatmap: np.ndarray  # (h, w) float32 in [0, 1] at the input image's size
    probs: np.ndarray  # (num_classes,) float32 softmax output
    class_index: int  # the class the heatmap explains
    layer: str
    method: str

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probs))


def _as_model_input(model, image: np.ndarray) -> np.ndarray:
    """(1, H, W, C) float32 0-255 at the model's input size and channels (PIL bilinear, as data.to_array)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise DataError(f"expected one (h, w, channels) image, got an array of shape {image.shape}")
    if image.shape[-1] == 4:
        image = image[..., :3]
    _, H, W, C = (None, None, None, None) if len(model.inputs[0].shape) != 4 else tuple(model.inputs[0].shape)
    needs_resize = (H is not None and H != image.shape[0]) or (W is not None and W != image.shape[1])
    needs_channels = C is not None and C != image.shape[-1]
    if needs_resize or needs_channels:
        pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        img = img.convert("L" if (C or image.shape[-1]) == 1 else "RGB")
        if needs_resize:
            img = img.resize((W or image.shape[1], H or image.shape[0]), Image.BILINEAR)
        image = np.asarray(img)
        image = image[..., None] if image.ndim == 2 else image
    return image.astype(np.float32)[None]


def _weights(method: str, feats: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """(channels,) importance of each feature map for the explained score."""
    if method == "gradcam":
        return tf.reduce_mean(grads, axis=(0, 1))  # global-average-pooled gradients (Selvaraju et al.)
    # Grad-CAM++ closed form for an exponential score (Chattopadhay et al. eq. 19): first-order gradients only
    g2, g3 = grads ** 2, grads ** 3
    denom = 2.0 * g2 + tf.reduce_sum(feats, axis=(0, 1)) * g3
    alpha = tf.math.divide_no_nan(g2, denom)
    return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(0, 1))


def resize_map(cam: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a 2-D map (any range) to (h, w) float32."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != (h, w):
        cam = np.asarray(Image.fromarray(cam, mode="F").resize((w, h), Image.BILINEAR))
    return cam.astype(np.float32)


def explain(model, image: np.ndarray, class_index: int | None = None, layer: str | Sequence[str] | None = None,
            method: str = "gradcam") -> Explanation:
    """Heatmap and class probabilities for one (h, w, c) image of 0-255 pixels (uint8 or float).

    ``class_index`` None explains the predicted class. ``layer`` None uses ``last_conv_layer(model)``; several
    layers are each explained, upsampled to the image, scaled to a peak of 1 and fused by their element-wise
    maximum (LayerCAM's multi-layer fusion, Jiang et al. 2021, without its tanh rescaling of shallow maps).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown CAM method {method!r}; use one of: {', '.join(METHODS)}")
    layers = [layer] if isinstance(layer, str) else list(layer or [last_conv_layer(model)])
    num_classes = int(model.outputs[0].shape[-1])
    if class_index is not None and not 0 <= int(class_index) < num_classes:
        raise ConfigError(f"class index {class_index} is out of range for a model with {num_classes} classes")
    h, w = np.asarray(image).shape[:2]
    x = tf.constant(_as_model_input(model, image))
    wanted = tf.constant(-1 if class_index is None else int(class_index), tf.int32)
    heatmap = np.zeros((h, w), np.float32)
    for name in layers:
        feats, grads, probs, index = explainer(model, name)(x, wanted)
        feats, grads = tf.cast(feats[0], tf.float32), tf.cast(grads[0], tf.float32)  # (h', w', channels)
        if method == "layercam":  # each position weighted by its own positive gradients
            cam = tf.nn.relu(tf.reduce_sum(tf.nn.relu(grads) * feats, axis=-1)).numpy()
        else:
            cam = tf.nn.relu(tf.reduce_sum(feats * _weights(method, feats, grads), axis=-1)).numpy()
        heatmap = np.maximum(heatmap, _normalise(resize_map(cam, h, w)))
    return Explanation(heatmap, probs[0].numpy().astype(np.float32), int(index), "+".join(layers), method)


def default_explanation(model, method: str | None = None, layers: Sequence[str] = ()) -> tuple[str, list[str]]:
    """(method, layers) ``cam`` uses when none are given. ``method``/``layers`` are a run's own choice
    (``eval.cam_method``/``eval.cam_layers``, e.g. a guided recipe's) and win; what they leave open is the
    registry's choice for the architecture, else Grad-CAM at the last convolutional layer."""
    spec = get_spec(model.name) if model.name in available() else None
    arch_method, arch_layers = "gradcam", [last_conv_layer(model)]
    if spec is not None and spec.cam_layers is not None:
        found = spec.cam_layers(model)
        if found and all(_has_layer(model, name) for name in found):
            arch_method, arch_layers = spec.cam_method, found
    if layers:
        for name in layers:
            explainer(model, name)  # a layer the model lacks fails here, listing the valid names
        return method or arch_method, list(layers)
    if method is None or method == arch_method:
        return arch_method, arch_layers
    return method, [last_conv_layer(model)]


def _has_layer(model, name: str) -> bool:
    try:
        model.get_layer(name)
        return True
    except ValueError:
        return False


def _normalise(cam: np.ndarray) -> np.ndarray:
    """Scale to a peak of 1; all zeros when nothing in the image speaks for the class."""
    top = float(cam.max()) if cam.size else 0.0
    if not (top > 0 and np.isfinite(top)):
        return np.zeros_like(cam, dtype=np.float32)
    return np.clip(cam / top, 0.0, 1.0).astype(np.float32)


def class_activation_map(model, image: np.ndarray, class_index: int | None = None,
                         layer: str | Sequence[str] | None = None, method: str = "gradcam") -> np.ndarray:
    """The (h, w) float32 heatmap in [0, 1] of one 0-255 image, at the image's size, by ``method`` (Grad-CAM,
    Grad-CAM++ or LayerCAM; see ``explain``)."""
    return explain(model, image, class_index, layer, method).heatmap
