"""Study kinds: how a kind's factors become a config, and how its records become a report.

Each kind is one module with `handles(factor) -> bool`, `apply(cfg, factors, definition)` and
`analyze(root, study, quiet) -> dict`; a definition names its kind with `kind = "..."`.
"""
from __future__ import annotations

import importlib

from ..errors import ConfigError

KINDS = {"depth-correlation": "ffhw.studies.depth_correlation", "trifecta": "ffhw.studies.trifecta"}


def get_kind(name: str):
    if name not in KINDS:
        raise ConfigError(f"study kind {name!r} is not known; use one of {', '.join(KINDS)}")
    return importlib.import_module(KINDS[name])
