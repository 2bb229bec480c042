"""The project's own exceptions: each message names the value and what was expected."""


class LatentlabError(Exception):
    """Base class: an error the user can act on, reported without a traceback."""


class ConfigError(LatentlabError, ValueError):
    """A configuration value is invalid."""


class DataError(LatentlabError):
    """A dataset file is missing, corrupt, or cannot be obtained."""


class TrackingError(LatentlabError):
    """The MLflow tracking server cannot be reached, before or during a run."""


class OutputError(LatentlabError):
    """An output cannot be written: a read-only or missing folder, a full disk."""


class TooLittleData(ConfigError):
    """The data cannot support an analysis as configured (too few normal samples, say): a
    pipeline skips that branch with this message instead of failing after the other's work."""
