"""Model registry and builders; importing this package registers every architecture."""

from . import applications, customnet  # noqa: F401  (registration side effect)
from .registry import ModelSpec, available, build_model, get_spec

__all__ = ["ModelSpec", "available", "build_model", "get_spec"]
