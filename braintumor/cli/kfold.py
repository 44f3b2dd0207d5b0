"""`braintumor kfold`."""

from __future__ import annotations

from . import command
from .common import not_yet


@command("kfold")
def kfold() -> None:
    """Not built yet."""
    not_yet("kfold")
