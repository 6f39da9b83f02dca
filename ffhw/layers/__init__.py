"""FF layer types. Each module in this package defines one type (or a type's conv blocks) and registers
it; importing the package imports them all, so adding a layer type is adding one file here (`base`, `ops`,
`conv` and `fused` hold what the types share)."""
import importlib
import pkgutil

from ..errors import ConfigError
from .base import CONV_TYPES, LAYER_TYPES, FFLayer, LayerOutput, register
from .conv import ConvBlock

SHARED = ("base", "conv", "fused", "ops")  # what the types share; every other module is a type

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in SHARED:
        importlib.import_module(f"{__name__}.{_module.name}")


def get_layer_type(name: str, conv: bool = False) -> type[FFLayer]:
    if name not in LAYER_TYPES:
        raise ConfigError(f"unknown layer type {name!r}; choose one of {', '.join(sorted(LAYER_TYPES))}")
    if conv and name not in CONV_TYPES:
        raise ConfigError(f"{name} layers have no conv block yet; use model.architecture = 'fc'")
    return CONV_TYPES[name] if conv else LAYER_TYPES[name]


__all__ = ["FFLayer", "ConvBlock", "LayerOutput", "LAYER_TYPES", "CONV_TYPES", "get_layer_type", "register"]
