"""`braintumor cam`."""

from __future__ import annotations

from . import command
from .common import not_yet


@command("cam")
def cam() -> None:
    """Not built yet."""
    not_yet("cam")
