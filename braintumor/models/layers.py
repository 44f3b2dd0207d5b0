"""Small serialisable layers that live inside saved models (a Lambda would need unsafe loading)."""

from __future__ import annotations

import keras
from keras import ops

_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="braintumor")
class Preprocess(keras.layers.Layer):
    """Turns 0-255 pixels into what a backbone expects, so every caller feeds the same thing.

    mode: ``caffe`` (RGB->BGR, ImageNet mean subtracted: ResNet50), ``tf`` ([-1, 1]: MobileNetV2),
    ``torch`` (/255 then ImageNet mean/std: DenseNet), ``raw`` (unchanged: EfficientNet rescales itself),
    ``unit`` ([0, 1]: CustomNet). ``to_rgb`` repeats a single gray channel three times for ImageNet backbones.
    """

    def __init__(self, mode: str = "unit", to_rgb: bool = False, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "torch", "raw", "unit"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode
        self.to_rgb = to_rgb

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.to_rgb and x.shape[-1] == 1:
            x = ops.repeat(x, 3, axis=-1)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.array(_CAFFE_MEAN_BGR, dtype=x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.array(_IMAGENET_MEAN_RGB, dtype=x.dtype)
            std = ops.array(_IMAGENET_STD_RGB, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "unit":
            return x / 255.0
        return x

    def compute_output_shape(self, input_shape):
        if self.to_rgb and input_shape[-1] == 1:
            return (*input_shape[:-1], 3)
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "to_rgb": self.to_rgb}
