"""The architecture registry: one builder signature, looked up by the config's ``model.arch``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import ModelConfig
from ..errors import ModelError, did_you_mean

# (cfg, num_classes, input_shape) -> keras.Model taking float 0-255 pixels of input_shape.
Builder = Callable[[ModelConfig, int, tuple], object]
# a built model -> the layers of its pretrained backbone (frozen for model.freeze_backbone_epochs)
Backbone = Callable[[object], list]
# a built model -> the layers `cam` explains by default (several are fused)
ExplainLayers = Callable[[object], list]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Builder
    preprocessing: str  # what the model does to 0-255 pixels inside itself, for meta.json and /model
    last_conv: str  # the layer Grad-CAM explains by default
    imagenet: bool  # whether ImageNet weights exist for it
    backbone: Backbone | None = None  # None: no pretrained backbone to freeze
    cam_method: str = "gradcam"  # how `cam` explains by default
    cam_layers: ExplainLayers | None = None  # None: last_conv alone


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, *, preprocessing: str, last_conv: str, imagenet: bool, backbone: Backbone | None = None,
             cam_method: str = "gradcam", cam_layers: ExplainLayers | None = None):
    """Decorator: ``@register("resnet50", ...)`` on a builder adds it to the registry under ``name``."""

    def wrap(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name, fn, preprocessing, last_conv, imagenet, backbone, cam_method, cam_layers)
        return fn

    return wrap


def available() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        hint = did_you_mean(name, available(), n=2, cutoff=0.4)
        raise ModelError(f"unknown architecture {name!r}{hint}; available: {', '.join(available())}")
    return _REGISTRY[name]


def build_model(cfg: ModelConfig, num_classes: int, input_shape: tuple[int, int, int]):
    """Build ``cfg.arch`` for ``num_classes`` classes; the model takes (h, w, c) pixels in 0-255."""
    spec = get_spec(cfg.arch)
    if cfg.weights == "imagenet" and not spec.imagenet:
        raise ModelError(f"{cfg.arch} has no ImageNet weights; use --weights none or a weights file")
    return spec.builder(cfg, num_classes, tuple(input_shape))
