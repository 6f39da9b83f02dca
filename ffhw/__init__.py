"""ffhw: Forward-Forward networks with standard, quantized and spiking layers, aimed at efficient hardware.

The Python API (ffhw/api.py): make_config, fit, load_run, Run, run_study, export_bundle."""
from ._version import __version__

API = ("make_config", "fit", "load_run", "Run", "run_study", "export_bundle")


def __getattr__(name):  # the API loads torch and the layers only when first used
    if name in API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'ffhw' has no attribute {name!r}")


__all__ = [*API, "__version__"]
