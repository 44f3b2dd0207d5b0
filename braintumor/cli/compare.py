"""`braintumor compare`."""

from __future__ import annotations

from . import command
from .common import not_yet


@command("compare")
def compare() -> None:
    """Not built yet."""
    not_yet("compare")
