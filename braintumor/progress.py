"""The one shape of progress reporting: the library says what it is doing, a skin decides how to show it.

A long job calls ``start(total, label)`` when it knows how much work there is (``total`` None: unknown),
``advance(n)`` as units finish, and ``log(message)`` for a line worth reading. The library never imports a
display: the CLI's Rich bars (``braintumor.cli.progress.RichReporter``) implement this protocol, tests pass a
recorder, and ``None`` (the default everywhere) reports nothing.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Reporter(Protocol):
    def start(self, total: int | None, label: str) -> None:
        """A new stage of ``total`` units (None: not known) called ``label``."""

    def advance(self, n: int = 1) -> None:
        """``n`` more units of the current stage are done."""

    def log(self, message: str) -> None:
        """A line for the person watching."""


class Silent:
    """A Reporter that reports nothing (what ``None`` means)."""

    def start(self, total: int | None, label: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def log(self, message: str) -> None:
        pass


def or_silent(reporter: Reporter | None) -> Reporter:
    """``reporter``, or one that reports nothing."""
    return Silent() if reporter is None else reporter
