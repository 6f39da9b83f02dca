"""User-facing errors: each carries one line that says what went wrong and what to do."""


class FFHWError(Exception):
    """Base class; the CLI prints the message on one line and exits non-zero."""


class DataError(FFHWError):
    """A data file is missing, corrupt or fails its checksum."""


class ConfigError(FFHWError):
    """A configuration value, preset or CLI flag is invalid."""


class DivergenceError(FFHWError):
    """Training produced a non-finite loss or goodness; records written so far are kept."""


class RunDirError(FFHWError):
    """A run directory is missing, incomplete or would be overwritten."""
