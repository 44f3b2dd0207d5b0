"""ImageNet families from keras.applications, built flat so every backbone layer is reachable (Grad-CAM)."""

from __future__ import annotations

import os
from pathlib import Path

import keras

from ..config import ModelConfig
from ..errors import ModelError
from .layers import Preprocess
from .registry import register

HEAD_PREFIX = "head_"


def _keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def _backbone(app, arch: str, cfg: ModelConfig, x):
    """Call a keras.applications constructor on tensor ``x`` with the configured weights."""
    weights = None if cfg.weights == "none" else cfg.weights  # "imagenet" or a local file path
    try:
        return app(include_top=False, weights=weights, input_tensor=x)
    except Exception as e:  # keras raises a bare Exception for a failed download
        text = str(e)
        if "URL fetch failure" in text or "HTTP Error" in text or "urlopen error" in text:
            raise ModelError(
                f"could not download the ImageNet weights for {arch} (offline?) and they are not cached in "
                f"{_keras_cache()}. Either run once on a connected machine (Keras caches them there; set "
                f"KERAS_HOME to choose the folder), copy the 'notop' .h5 file named in this error into that "
                f"folder, pass a local file with --weights PATH, or train from scratch with --weights none. "
                f"Keras said: {text.splitlines()[0][:300]}"
            ) from e
        if weights not in (None, "imagenet"):
            raise ModelError(
                f"could not load weights file {weights} into {arch}: {text[:300]}. It must be a Keras "
                f"{app.__name__} backbone weights file saved without the top (include_top=False)"
            ) from e
        raise


def _classifier(app, arch: str, mode: str, cfg: ModelConfig, num_classes: int, input_shape: tuple):
    inputs = keras.Input(shape=input_shape, name="image")
    x = Preprocess(mode, to_rgb=True, name="preprocess")(inputs)
    base = _backbone(app, arch, cfg, x)
    x = keras.layers.GlobalAveragePooling2D(name=HEAD_PREFIX + "pool")(base.output)
    x = keras.layers.Dropout(cfg.dropout, name=HEAD_PREFIX + "dropout")(x)
    # float32 softmax: stays numerically safe under mixed precision
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=arch)


def backbone_layers(model) -> list:
    """The layers that came from the pretrained backbone (everything but input, preprocessing and head)."""
    return [
        layer for layer in model.layers
        if not (layer.name.startswith(HEAD_PREFIX) or layer.name in ("image", "preprocess", "predictions"))
    ]


@register("resnet50", preprocessing="caffe: RGB->BGR, ImageNet channel means subtracted (input 0-255)",
          last_conv="conv5_block3_out", imagenet=True, backbone=backbone_layers)
def resnet50(cfg: ModelConfig, num_classes: int, input_shape: tuple):
    return _classifier(keras.applications.ResNet50, "resnet50", "caffe", cfg, num_classes, input_shape)


@register("mobilenet", preprocessing="tf: scaled to [-1, 1] (input 0-255)", last_conv="out_relu",
          imagenet=True, backbone=backbone_layers)
def mobilenet(cfg: ModelConfig, num_classes: int, input_shape: tuple):
    return _classifier(keras.applications.MobileNetV2, "mobilenet", "tf", cfg, num_classes, input_shape)


@register("densenet", preprocessing="torch: /255 then ImageNet mean/std (input 0-255)", last_conv="relu",
          imagenet=True, backbone=backbone_layers)
def densenet(cfg: ModelConfig, num_classes: int, input_shape: tuple):
    return _classifier(keras.applications.DenseNet121, "densenet", "torch", cfg, num_classes, input_shape)


@register("efficientnet", preprocessing="raw: 0-255 as is; EfficientNetB0 rescales and normalises inside",
          last_conv="top_activation", imagenet=True, backbone=backbone_layers)
def efficientnet(cfg: ModelConfig, num_classes: int, input_shape: tuple):
    return _classifier(keras.applications.EfficientNetB0, "efficientnet", "raw", cfg, num_classes, input_shape)
