"""`braintumor eda`."""

from __future__ import annotations

from . import command
from .common import not_yet


@command("eda")
def eda() -> None:
    """Not built yet."""
    not_yet("eda")
