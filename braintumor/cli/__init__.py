"""The Typer skin: each subcommand lives in its own module here and is a thin skin over ``commands``."""

from __future__ import annotations

# Subcommands register themselves on import (order = order in --help).
from . import cam, compare, eda, evaluate, export, kfold, predict, serve, stress, train  # noqa: E402,F401,I001
from .app import app, main

__all__ = ["app", "main"]
