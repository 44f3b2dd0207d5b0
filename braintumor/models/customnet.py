"""CustomNet: the study's small CNN (conv blocks with batch norm, LeakyReLU, max pooling, growing filters).

Sized for CPUs: global average pooling instead of the study's large flatten+dense, and optional levers
(residual shortcuts, squeeze-excitation, depthwise-separable convolutions) that are config keys.
"""

from __future__ import annotations

import math
import re

import keras
from keras import layers

from ..config import ModelConfig
from ..errors import ModelError
from .layers import Preprocess
from .registry import register

# Keras' default 0.99 needs hundreds of steps before the moving statistics used at inference are any good; small
# MRI datasets on a CPU give tens of steps per epoch, so early "best" models predicted one class. 0.9 settles fast.
BN_MOMENTUM = 0.9


def _conv(x, filters: int, cfg: ModelConfig, name: str, separable: bool):
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    x = conv(filters, 3, padding="same", use_bias=False, name=name + "_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=name + "_bn")(x)
    return layers.LeakyReLU(negative_slope=cfg.leaky_alpha, name=name + "_act")(x)


def _squeeze_excite(x, filters: int, name: str, ratio: int = 8):
    s = layers.GlobalAveragePooling2D(keepdims=True, name=name + "_se_pool")(x)
    s = layers.Conv2D(max(4, filters // ratio), 1, activation="relu", name=name + "_se_reduce")(s)
    s = layers.Conv2D(filters, 1, activation="sigmoid", name=name + "_se_expand")(s)
    return layers.Multiply(name=name + "_se_scale")([x, s])


def _block(x, filters: int, cfg: ModelConfig, index: int, pool: bool = True):
    name = f"block{index}"
    shortcut = x
    for j in range(cfg.convs_per_block):
        # the first convolution sees raw pixels (1 or 3 channels): a separable one would waste it
        x = _conv(x, filters, cfg, f"{name}_{j + 1}", cfg.separable and not (index == 1 and j == 0))
    if cfg.squeeze_excite:
        x = _squeeze_excite(x, filters, name)
    if cfg.residual:
        if shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, use_bias=False, name=name + "_proj")(shortcut)
            shortcut = layers.BatchNormalization(momentum=BN_MOMENTUM, name=name + "_proj_bn")(shortcut)
        x = layers.Add(name=name + "_add")([x, shortcut])
        x = layers.LeakyReLU(negative_slope=cfg.leaky_alpha, name=name + "_out")(x)
    return layers.MaxPooling2D(2, name=name + "_pool")(x) if pool else x


def cam_layer(model) -> list[str]:
    """The map `cam` explains by default: the end of the second block (half the input's resolution, 32x32 at
    64 px), with LayerCAM; with fewer than three blocks, the end of the last.

    Measured on the figshare tumour boxes (benchmarks/localisation.md): the deepest map (8x8 at 64 px, Grad-CAM's
    usual choice) is too coarse to land on a tumour; LayerCAM at the second block's end pointed at it most
    often and concentrated the most mass on it, alone better than fused with the other block ends."""
    ends: dict[int, tuple[int, str]] = {}
    for layer in model.layers:
        m = re.fullmatch(r"block(\d+)_(\d+)_act", layer.name)
        if m:
            block, conv = int(m.group(1)), int(m.group(2))
            if conv >= ends.get(block, (0, ""))[0]:
                ends[block] = (conv, layer.name)
    if not ends:
        return []
    return [ends[2][1]] if len(ends) >= 3 and 2 in ends else [ends[max(ends)][1]]


@register("customnet", preprocessing="unit: scaled to [0, 1] (input 0-255)", last_conv="auto", imagenet=False,
          cam_method="layercam", cam_layers=cam_layer)
def customnet(cfg: ModelConfig, num_classes: int, input_shape: tuple):
    size = min(input_shape[:2])
    if size < 2 ** len(cfg.filters):
        raise ModelError(f"image size {size} is too small for {len(cfg.filters)} pooling blocks; "
                         f"use at least {2 ** len(cfg.filters)} pixels or fewer model.filters")
    inputs = keras.Input(shape=input_shape, name="image")
    x = Preprocess("unit", name="preprocess")(inputs)
    # feature_stride: the last block's map is input / stride; pools are dropped from the blocks before it
    n = len(cfg.filters)
    pools_before_last = n - 1 if not cfg.feature_stride else int(round(math.log2(cfg.feature_stride)))
    for i, filters in enumerate(cfg.filters, start=1):
        x = _block(x, filters, cfg, i, pool=i == n or i <= pools_before_last)
    x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    for j, units in enumerate(cfg.dense_units, start=1):
        x = layers.Dense(units, use_bias=False, name=f"head_dense{j}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"head_dense{j}_bn")(x)
        x = layers.LeakyReLU(negative_slope=cfg.leaky_alpha, name=f"head_dense{j}_act")(x)
        x = layers.Dropout(cfg.dropout, name=f"head_dense{j}_dropout")(x)
    if not cfg.dense_units:
        x = layers.Dropout(cfg.dropout, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="customnet")
    if cfg.weights not in ("none", "imagenet"):
        try:
            model.load_weights(cfg.weights)
        except Exception as e:
            raise ModelError(f"could not load {cfg.weights} into customnet with this config: {e}") from e
    return model
