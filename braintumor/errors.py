"""The exceptions that reach a person: each says what was wrong and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BraintumorError(Exception):
    """Base class. The CLI prints the message in one red line; the server maps it to a 4xx."""

    exit_code = 1


class ConfigError(BraintumorError):
    """A bad config key, value or flag."""

    exit_code = 2


class DataError(BraintumorError):
    """A data folder, class layout or image that cannot be used."""


class ModelError(BraintumorError):
    """A model that cannot be built, loaded or weighted as asked."""


class RunError(BraintumorError):
    """A run directory that is missing, incomplete or not a run."""


def did_you_mean(word: str, options: Iterable[str], n: int = 3, cutoff: float = 0.5,
                 ignore_case: bool = False) -> str:
    """`` (did you mean 'a' or 'b'?)`` naming the options closest to ``word`` (difflib), or '' when none is."""
    options = list(options)
    keys = [o.lower() for o in options] if ignore_case else options
    close = difflib.get_close_matches(word.lower() if ignore_case else word, keys, n=n, cutoff=cutoff)
    names = [options[keys.index(c)] for c in close]
    return f" (did you mean {' or '.join(map(repr, names))}?)" if names else ""
