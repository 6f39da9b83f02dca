"""Study definitions: a grid of configurations x seeds, each configuration's config, and the work units
(seeds trained side by side) it splits into. Running them is ffhw/runner.py; analysing them, ffhw/studies/.

A study definition is a TOML file in experiments/ (`kind`, `[base]`, `[layer_types.<type>]`,
`[levels.<factor>.<value>]`, `[grids.<name>]` with `factors`, `seeds` and its own `[grids.<name>.base]`).
A cell is one configuration (one value per factor) and one seed. The config of a cell is built in this
order: the layer type's preset (models/<type>.toml), the study's `base`, its `layer_types.<type>`, the
grid's `base`, each factor's level table, the study kind's own rule (e.g. depth x width -> hidden), and
`--set` flags.

Layout of a study directory (default <out>/<study>-<grid>-<layer type>):

    study.toml               what was asked: definition, grid, layer type, --set flags (frozen at start)
    cells/<cell>/            one per configuration x seed: config.toml (the cell's own config),
                             metrics.csv (tidy rows of that seed), cell.json (factors, seed, status, timings,
                             code version)
    work/<unit>/             the run directory of a work unit (several seeds of one configuration trained
                             side by side, or one seed) while it trains; its checkpoint makes a killed
                             unit continue from its last finished epoch
    REPORT.md, figures/, analysis.json    written by the study kind's analysis from cells/ only

Cells whose cell.json says complete or diverged are never run again; a failed cell (an exception, after
the retries) is reported and tried again on the next invocation.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from .config import RunConfig, find_preset, load_preset, load_toml, merge, override, repo_root
from .errors import ConfigError
from .records import Cell, cell_key


# ---------------------------------------------------------------------------------------------- definition
DESIGNS = ("shared", "independent", "nested")


@dataclass
class Unit:
    """Seeds of one configuration trained as one (seed-batched) run."""
    key: str
    factors: dict
    config: dict
    seeds: list[int] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.key}_seeds-{self.seeds[0]}-{self.seeds[-1]}"

    def cells(self) -> list[Cell]:
        return [Cell(self.key, self.factors, s) for s in self.seeds]

    def with_seeds(self, seeds: list[int]) -> "Unit":
        """The same configuration over other (consecutive) seeds: train.seed and train.seeds follow."""
        cfg = RunConfig.from_dict(copy.deepcopy(self.config))
        cfg.train.seed, cfg.train.seeds = seeds[0], len(seeds)
        cfg.validate()  # e.g. --seed-batch N with fp16 autocast
        return Unit(self.key, self.factors, cfg.to_dict(), list(seeds))


class Study:
    """A study definition with one grid and one layer type chosen."""

    def __init__(self, definition: dict, grid: str, layer_type: str, sets: list[str] | None = None,
                 source: str = ""):
        from .studies import get_kind

        self.definition, self.grid_name, self.layer_type = definition, grid, layer_type
        self.sets, self.source = list(sets or []), source
        self.name = definition.get("name") or Path(source).stem.replace("_", "-")
        self.kind = get_kind(definition.get("kind", ""))
        grids = definition.get("grids", {})
        if grid not in grids:
            raise ConfigError(f"study {self.name!r} has no grid {grid!r}; defined: {', '.join(grids) or 'none'}")
        self.grid = grids[grid]
        if not self.grid.get("factors"):
            raise ConfigError(f"grid {grid!r} of study {self.name!r} needs a factors table")

    @classmethod
    def load(cls, name: str, grid: str, layer_type: str, sets: list[str] | None = None) -> "Study":
        try:
            path = find_preset(name if name.endswith(".toml") else name.replace("-", "_"), folder="experiments")
        except ConfigError:
            known = sorted(p.stem.replace("_", "-") for p in (repo_root() / "experiments").glob("*.toml")
                           if "kind" in load_toml(p))
            raise ConfigError(f"study {name!r} not found; defined: {', '.join(known)} (or pass a .toml path)") from None
        try:  # recorded relative to the repository, so a clone elsewhere finds it
            source = str(path.resolve().relative_to(repo_root()))
        except ValueError:
            source = str(path.resolve())
        return cls(load_toml(path), grid, layer_type, sets, source)

    def frozen(self) -> dict:
        return {"name": self.name, "grid": self.grid_name, "layer_type": self.layer_type, "set": self.sets,
                "source": self.source, "definition": self.definition}

    @classmethod
    def from_frozen(cls, data: dict) -> "Study":
        return cls(data["definition"], data["grid"], data["layer_type"], data.get("set", []), data.get("source", ""))

    # ---- cells ----
    @property
    def design(self) -> str:
        """How configurations relate: "shared" (each trained, every one with the same seeds), "independent"
        (each with its own seeds) or "nested" (the study kind trains only the configurations that contain
        the others, e.g. the deepest network, whose prefixes are the shallower ones)."""
        design = self.grid.get("design", "shared")
        if design not in DESIGNS:
            raise ConfigError(f"grid {self.grid_name!r}: design = {design!r} is not one of {', '.join(DESIGNS)}")
        return design

    def all_configurations(self) -> list[dict]:
        factors = self.grid["factors"]
        names = list(factors)
        every = [dict(zip(names, values)) for values in itertools.product(*(factors[n] for n in names))]
        # exclude: combinations of the product that the grid leaves out (e.g. the widest network's deepest depths)
        rules = [rule.get("match", {}) for rule in self.grid.get("exclude", [])]
        return [f for f in every if not any(all(f.get(k) == v for k, v in match.items()) for match in rules)]

    def configurations(self) -> list[dict]:
        """The configurations that train (under the nested design, those the study kind keeps)."""
        every = self.all_configurations()
        if self.design != "nested":
            return every
        if not hasattr(self.kind, "nest"):
            raise ConfigError(f"grid {self.grid_name!r}: study kind {self.definition.get('kind')!r} has no nested design")
        return self.kind.nest(every)

    def seeds_for(self, factors: dict) -> list[int]:
        first = int(self.grid.get("first_seed", 0))
        if self.design == "independent":  # a seed stream of its own per configuration, stable under grid edits
            from .model import derive_seed
            first += 1000 * (1 + derive_seed("configuration", cell_key(factors)) % 100000)
        count = int(self.grid.get("seeds", 1))
        for rule in self.grid.get("extra", []):  # e.g. 30 seeds for 32 x 1000
            if all(factors.get(k) == v for k, v in rule.get("match", {}).items()):
                count = int(rule.get("seeds", count))
        return list(range(first, first + count))

    def config_for(self, factors: dict) -> RunConfig:
        try:
            cfg = load_preset(self.layer_type)
        except ConfigError:
            cfg = RunConfig()
        cfg.model.layer_type = self.layer_type
        cfg.name = f"{self.name}/{cell_key(factors)}"
        merge(cfg, copy.deepcopy(self.definition.get("base", {})))
        merge(cfg, copy.deepcopy(self.definition.get("layer_types", {}).get(self.layer_type, {})))
        merge(cfg, copy.deepcopy(self.grid.get("base", {})))
        merge(cfg, copy.deepcopy(self.grid.get("layer_types", {}).get(self.layer_type, {})))
        levels = self.definition.get("levels", {})
        for name, value in factors.items():
            if "." in name:  # a factor named by its config path sets that field directly
                override(cfg, name, value)
            table = levels.get(name, {}).get(str(value))
            if table is not None:
                merge(cfg, copy.deepcopy(table))
            elif "." not in name and not self.kind.handles(name):
                raise ConfigError(f"factor {name}={value!r} of study {self.name!r} has no [levels.{name}.{value}] "
                                  f"table and no rule in the study kind")
        self.kind.apply(cfg, factors, self.definition, self.all_configurations() if self.design == "nested" else None)
        for item in self.sets:
            key, _, value = item.partition("=")
            override(cfg, key.strip(), value.strip())
        return cfg.validate()

    def check_only(self, only: dict[str, list[str]]) -> dict[str, list[str]]:
        """A cell filter (factor -> values, as written on the command line), checked against this grid."""
        factors = self.grid["factors"]
        for key, values in only.items():
            if key not in factors:
                raise ConfigError(f"--only {key}: this grid's factors are {', '.join(factors)}")
            known = [str(v) for v in factors[key]]
            unknown = [v for v in values if v not in known]
            if unknown:
                raise ConfigError(f"--only {key}={','.join(unknown)}: not in this grid; its values are {', '.join(known)}")
        trained = self.configurations()
        if only and not any(self.selected(f, only) for f in trained):
            raise ConfigError(f"--only selects none of the configurations this grid trains ({self.design} design: "
                              f"{', '.join(cell_key(f) for f in trained)})")
        return only

    @staticmethod
    def selected(factors: dict, only: dict[str, list[str]]) -> bool:
        return all(str(factors.get(k)) in values for k, values in only.items())

    def units(self, seed_batch: int | str = "auto", device_type: str | None = None) -> list[Unit]:
        """Work units; `device_type`: where the executor runs them (None: this machine decides)."""
        units = []
        for factors in self.configurations():
            cfg = self.config_for(factors)
            if device_type == "cpu" and cfg.train.device not in ("auto", "cpu"):
                raise ConfigError(f"train.device = {cfg.train.device} but the executor gives each cell no GPU: "
                                  f"pass --gpus-per-cell (e.g. 0.25) or --set train.device=cpu")
            seeds = self.seeds_for(factors)
            chunk = (choose_seed_batch(cfg, len(seeds), device_type) if seed_batch == "auto"
                     else max(1, int(seed_batch)))
            whole = Unit(cell_key(factors), factors, cfg.to_dict(), seeds)
            units += [whole.with_seeds(seeds[start:start + chunk]) for start in range(0, len(seeds), chunk)]
        return units


def choose_seed_batch(cfg: RunConfig, seeds: int, device_type: str | None = None) -> int:
    """How many seeds of one configuration to train side by side on `device_type` (None: where the config's
    train.device resolves on this machine), from the data set's real input size and the layer type's
    values per unit (spiking: T); the rule itself is `device.seed_batch`."""
    from .data import dataset_info
    from .device import activation_values, resolve_device_type, seed_batch
    from .layers import get_layer_type
    from .model import network_size

    if cfg.train.autocast == "fp16":
        return 1  # one gradient scaler per optimiser would couple stacked seeds (RunConfig.validate)
    conv = cfg.model.architecture != "fc"
    info = dataset_info(cfg.data.dataset)
    params, widest = network_size(cfg, info.image_shape, info.num_classes)
    layer_cls = get_layer_type(cfg.model.layer_type, conv=conv)
    values = layer_cls.values_per_unit(layer_cls.resolve_options(dict(cfg.model.layer)))
    return seed_batch(seeds, device_type or resolve_device_type(cfg.train.device), conv, params,
                      activation_values(cfg.train.batch_size, widest, values))


def _grid_part(definition: dict, grid: str, layer_type: str) -> dict:
    """The parts of a definition that decide what a grid's cells of one layer type train (documentation,
    the grid's note included, and other layer types' tables may change freely)."""
    grid_table = {k: v for k, v in definition.get("grids", {}).get(grid, {}).items() if k != "note"}
    return {k: definition.get(k) for k in ("kind", "base", "levels")} | \
        {"layer_type": definition.get("layer_types", {}).get(layer_type), "grid": grid_table}
