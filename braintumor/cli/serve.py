"""`braintumor serve`."""

from __future__ import annotations

from . import command
from .common import not_yet


@command("serve")
def serve() -> None:
    """Not built yet."""
    not_yet("serve")
