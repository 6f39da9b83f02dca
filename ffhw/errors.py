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


class ExportError(FFHWError):
    """An export failed its parity check, or a bundle is incomplete, tampered with or mismatched."""


def run_cli(main, argv) -> int:
    """Run a command's main: a user-facing error (or a file the system refuses) becomes one line on stderr
    and exit status 2, never a traceback; what was already written stays."""
    import sys
    try:
        return main(argv)
    except FFHWError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except OSError as exc:  # a path that is a file, a full disk, no permission...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; check the path and its permissions", file=sys.stderr)
    return 2
