"""FF layer types. Each module in this package defines one type and registers it; importing the
package imports them all, so adding a layer type is adding one file here."""
import importlib
import pkgutil

from ..errors import ConfigError
from .base import LAYER_TYPES, FFLayer, LayerOutput, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")


def get_layer_type(name: str) -> type[FFLayer]:
    if name not in LAYER_TYPES:
        raise ConfigError(f"unknown layer type {name!r}; choose one of {', '.join(sorted(LAYER_TYPES))}")
    return LAYER_TYPES[name]


__all__ = ["FFLayer", "LayerOutput", "LAYER_TYPES", "get_layer_type", "register"]
