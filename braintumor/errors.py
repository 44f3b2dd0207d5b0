"""The exceptions that reach a person: each says what was wrong and what to do."""


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
