"""Studies: a grid of configurations x seeds, run cell by cell, resumable, analysed from records only.

    python -m ffhw.run study depth-correlation --layer-type spiking --grid cpu
    python -m ffhw.run study trifecta --layer-type quantized --grid cpu --workers 2
    python -m ffhw.run study depth-correlation --grid tiny --executor ray --ray-address auto
    python -m ffhw.run study --report experiments/results/depth-correlation-cpu-standard

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

import argparse
import copy
import itertools
import json
import shutil
import tempfile
import time
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path

from .config import RunConfig, find_preset, load_preset, load_toml, merge, override, repo_root, safe_component
from .errors import ConfigError, DivergenceError, FFHWError
from .records import RunDir, atomic_write, code_version, make_dir, read_json

FINAL = ("complete", "diverged")  # cells in these states are never run again
TIMING_METRICS = ("epoch_seconds", "eval_seconds")  # wall-clock measurements: differ between identical runs


# ---------------------------------------------------------------------------------------------- definition
@dataclass
class Cell:
    key: str  # configuration key, e.g. depth-8_width-100
    factors: dict
    seed: int

    @property
    def id(self) -> str:
        return f"{self.key}_seed-{self.seed}"


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


def cell_key(factors: dict) -> str:
    """The configuration's name, which becomes part of its cells' directory names."""
    key = "_".join(f"{name.split('.')[-1]}-{value}" for name, value in factors.items())
    return safe_component(key, f"the cell name of factors {factors}")


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
    def configurations(self) -> list[dict]:
        factors = self.grid["factors"]
        names = list(factors)
        return [dict(zip(names, values)) for values in itertools.product(*(factors[n] for n in names))]

    def seeds_for(self, factors: dict) -> list[int]:
        first = int(self.grid.get("first_seed", 0))
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
        self.kind.apply(cfg, factors, self.definition)
        for item in self.sets:
            key, _, value = item.partition("=")
            override(cfg, key.strip(), value.strip())
        return cfg.validate()

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


# ---------------------------------------------------------------------------------------------- cell records
def cell_dir(root: Path, cell: Cell) -> Path:
    return Path(root) / "cells" / cell.id


CELL_FIX = "delete that cell's folder and run the study again to retrain it"


def read_cell(path: Path) -> dict:
    info = path / "cell.json"
    return read_json(info, CELL_FIX) if info.exists() else {}


def write_cell(root: Path, cell: Cell, config: dict, status: str, rows: list[dict] | None, info: dict) -> None:
    path = cell_dir(root, cell)
    path.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig.from_dict(copy.deepcopy(config))
    cfg.train.seed, cfg.train.seeds = cell.seed, 1
    from .config import dumps
    atomic_write(path / "config.toml", dumps(cfg))
    if rows is not None:
        RunDir(path).write_metrics(rows)
    body = {"cell": cell.id, "key": cell.key, "factors": cell.factors, "seed": cell.seed, "status": status,
            **info, "code": code_version(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write(path / "cell.json", json.dumps(body, indent=2, sort_keys=True) + "\n")  # last: marks the cell done


def load_cells(root: Path) -> list[dict]:
    """Every recorded cell: its cell.json plus `rows` (metrics.csv)."""
    cells = []
    for path in sorted((Path(root) / "cells").glob("*/cell.json")):
        info = read_json(path, CELL_FIX)
        info["rows"] = RunDir(path.parent).read_metrics()
        cells.append(info)
    return cells


# ---------------------------------------------------------------------------------------------- one unit
def run_unit(spec: dict) -> dict:
    """Train one unit and split its records per seed. Runs in any executor (must stay importable and
    picklable). With spec["root"] set, the unit trains in <root>/work/<unit> and writes its cells itself;
    without, it trains in a temporary directory and returns the rows for the driver to write."""
    from .run import train

    unit = Unit(spec["key"], spec["factors"], spec["config"], spec["seeds"])
    cfg = RunConfig.from_dict(copy.deepcopy(unit.config))
    root = Path(spec["root"]) if spec.get("root") else None
    scratch = None
    if root is not None:
        work = root / "work" / unit.id
    else:
        scratch = tempfile.mkdtemp(prefix="ffhw-unit-")
        work = Path(scratch) / unit.id
    resume = (work / "checkpoint.pt").exists()
    if work.exists() and not resume:
        shutil.rmtree(work)  # a unit that died before its first epoch: start it cleanly
    status, extra = "complete", {}
    t0 = time.perf_counter()
    try:
        summary = train(RunDir.open(work).config() if resume else cfg, work, quiet=True, resume=resume)
    except DivergenceError as exc:
        status, extra = "diverged", {"error": str(exc)}
        summary = RunDir(work).read_summary()
    rows = RunDir(work).read_metrics()
    out = {"unit": unit.id, "status": status, "cells": {}}
    for cell in unit.cells():
        mine = [r for r in rows if r["seed"] == cell.seed]
        info = {"unit": unit.id, "unit_seeds": unit.seeds, "unit_seconds": time.perf_counter() - t0,
                "train_seconds_unit": summary.get("train_seconds"), "device": summary.get("device"),
                "epochs_completed": summary.get("epochs_completed"), **extra}
        if status == "diverged":
            info["diverged"] = summary.get("diverged")
        if root is not None:
            write_cell(root, cell, unit.config, status, mine, info)
            out["cells"][cell.id] = {"status": status}
        else:
            out["cells"][cell.id] = {"status": status, "rows": mine, "info": info}
    if root is not None and status == "complete":
        for name in ("checkpoint.pt",):  # the model stays (model.pt); the optimiser state is no longer needed
            (work / name).unlink(missing_ok=True)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------- the runner
class StudyRunner:
    def __init__(self, study: Study, root: Path, executor, seed_batch: int | str = "auto", retries: int = 2,
                 quiet: bool = False, console=None):
        from rich.console import Console

        self.study, self.root, self.executor = study, Path(root), executor
        self.seed_batch, self.retries, self.quiet = seed_batch, retries, quiet
        self.console = console or Console(quiet=quiet)

    def prepare(self) -> None:
        """Create the study directory, or check that an existing one was started with the same definition."""
        import tomli_w

        frozen_path = self.root / "study.toml"
        mine = self.study.frozen()
        if frozen_path.exists():
            saved = load_toml(frozen_path)
            for key in ("grid", "layer_type", "set"):
                if saved.get(key) != mine[key]:
                    raise ConfigError(f"{self.root} was started with {key} = {saved.get(key)!r}, not {mine[key]!r}; "
                                      f"pass --name to start another study directory")
            if _grid_part(saved["definition"], saved["grid"]) != _grid_part(mine["definition"], mine["grid"]):
                raise ConfigError(f"the definition of study {self.study.name!r} changed since {self.root} was "
                                  f"started; restore it, or pass --name to start a new study directory")
            return
        make_dir(self.root, "study directory")
        atomic_write(frozen_path, tomli_w.dumps(mine))

    def pending_units(self) -> tuple[list[Unit], int, int]:
        units, done, total = [], 0, 0
        for unit in self.study.units(self.seed_batch, getattr(self.executor, "device_type", None)):
            todo = [c.seed for c in unit.cells() if read_cell(cell_dir(self.root, c)).get("status") not in FINAL]
            total += len(unit.seeds)
            done += len(unit.seeds) - len(todo)
            if not todo:
                continue
            if todo == unit.seeds:
                units.append(unit)
            elif todo == list(range(todo[0], todo[0] + len(todo))):  # part finished under another chunking
                units.append(unit.with_seeds(todo))
            else:
                units += [unit.with_seeds([s]) for s in todo]
        return units, done, total

    def spec(self, unit: Unit) -> dict:
        return {"key": unit.key, "factors": unit.factors, "config": unit.config, "seeds": unit.seeds,
                "root": str(self.root) if self.executor.writes_locally else None}

    def run(self) -> dict:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.prepare()
        units, done, total = self.pending_units()
        self.console.print(f"study {self.study.name} [{self.study.grid_name} grid, {self.study.layer_type} layers]: "
                           f"{total} cells, {done} already recorded, {len(units)} work unit(s) to run on "
                           f"{self.executor.name} -> {self.root}")
        failures: dict[str, str] = {}
        attempts: dict[str, int] = {}
        queue = deque(units)
        inflight = {}
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("cells"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=self.console, disable=self.quiet)
        with progress:
            task = progress.add_task(self.study.name, total=total, completed=done)
            while queue or inflight:
                while queue and len(inflight) < self.executor.slots:
                    unit = queue.popleft()
                    progress.update(task, description=f"{self.study.name}: {unit.key} seeds {unit.seeds[0]}-{unit.seeds[-1]}")
                    inflight[self.executor.submit(run_unit, self.spec(unit))] = unit
                finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for future in finished:
                    unit = inflight.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:  # noqa: BLE001 - any failure of a unit is retried, then reported
                        attempts[unit.id] = attempts.get(unit.id, 0) + 1
                        cause = getattr(exc, "cause", None) or exc  # Ray wraps the worker's exception
                        message = f"{type(cause).__name__}: {cause}".splitlines()[0]
                        if attempts[unit.id] <= self.retries:
                            self.console.print(f"[yellow]{unit.id} failed ({message}); retry "
                                               f"{attempts[unit.id]} of {self.retries}")
                            queue.append(unit)
                        else:
                            failures[unit.id] = message
                            for cell in unit.cells():
                                write_cell(self.root, cell, unit.config, "failed", None,
                                           {"unit": unit.id, "error": message,
                                            "traceback": traceback.format_exception(cause)[-3:]})
                            progress.advance(task, len(unit.seeds))
                            self.console.print(f"[red]{unit.id} failed after {self.retries} retries: {message}")
                        continue
                    if result["status"] == "diverged" and len(unit.seeds) > 1:
                        # One seed's divergence stops the batched run: train each seed alone to find which.
                        self.console.print(f"[yellow]{unit.id} diverged; training its seeds one at a time")
                        queue.extend(unit.with_seeds([s]) for s in unit.seeds)
                        continue
                    for cell in unit.cells():
                        entry = result["cells"][cell.id]
                        if "rows" in entry:  # the worker had no access to the study directory
                            write_cell(self.root, cell, unit.config, entry["status"], entry["rows"], entry["info"])
                    if result["status"] == "diverged":
                        self.console.print(f"[yellow]{unit.id} diverged: marked, moving on")
                    progress.advance(task, len(unit.seeds))
        counts: dict[str, int] = {}
        for info in (read_cell(p.parent) for p in (self.root / "cells").glob("*/cell.json")):
            counts[info["status"]] = counts.get(info["status"], 0) + 1
        self.console.print("cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        return {"counts": counts, "failures": failures}


def _grid_part(definition: dict, grid: str) -> dict:
    """The parts of a definition that decide what a grid's cells train (documentation may change freely)."""
    return {k: definition.get(k) for k in ("kind", "base", "layer_types", "levels")} | \
        {"grid": definition.get("grids", {}).get(grid)}


# ---------------------------------------------------------------------------------------------- CLI
def default_dir(out: str, study: Study) -> Path:
    return Path(out) / safe_component(f"{study.name}-{study.grid_name}-{study.layer_type}", "study directory name")


def analyze(root: Path, quiet: bool = False, options: list[str] | None = None) -> dict:
    """Analyse a study directory from its records; `options` (KEY=VALUE) override the definition's
    [analysis] table, e.g. layer_split=train or layer_metric=layer_acc10."""
    from .config import tomllib

    from .studies import get_kind

    frozen = root / "study.toml"
    if not frozen.exists():
        raise ConfigError(f"{root} is not a study directory (no study.toml); run a study first")
    study = Study.from_frozen(load_toml(frozen))
    source = Path(study.source) if Path(study.source).is_absolute() else repo_root() / study.source
    if study.source and source.is_file():  # analysis options may evolve after the cells ran; what the cells trained may not
        current = load_toml(source)
        if _grid_part(current, study.grid_name) == _grid_part(study.definition, study.grid_name):
            study.definition["analysis"] = current.get("analysis", {})
    for item in options or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--analysis {item!r}: write KEY=VALUE, e.g. --analysis layer_split=train")
        try:
            value = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            pass  # a bare string
        study.definition.setdefault("analysis", {})[key.strip()] = value
    if not load_cells(root):
        raise ConfigError(f"{root} holds no recorded cells yet; run the study first")
    return get_kind(study.definition.get("kind", "")).analyze(root, study, quiet=quiet)


def main(argv: list[str]) -> int:
    from .layers import LAYER_TYPES
    from .executors import EXECUTORS, make_executor

    p = argparse.ArgumentParser(prog="python -m ffhw.run study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", nargs="?", help="study definition: a name in experiments/ (depth-correlation, trifecta) "
                                            "or a .toml path")
    p.add_argument("--layer-type", default="standard", choices=sorted(LAYER_TYPES))
    p.add_argument("--grid", default="cpu", help="grid of the definition to run (paper, cpu, tiny, ...)")
    p.add_argument("--out", default="runs", help="parent of the study directory (default runs/)")
    p.add_argument("--name", help="study directory name (default <study>-<grid>-<layer type>); an existing one "
                                  "is resumed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field in every cell (saved with the study), e.g. --set train.device=cuda")
    p.add_argument("--seed-batch", default="auto",
                   help="seeds trained side by side per work unit: auto (by network size and device) or a number")
    p.add_argument("--executor", default="in-process", choices=EXECUTORS)
    p.add_argument("--workers", type=int, default=1, help="local worker processes (implies --executor process)")
    p.add_argument("--ray-address", help="Ray cluster address (e.g. auto, or ray://HOST:10001); default: start "
                                         "a local Ray instance")
    p.add_argument("--gpus-per-cell", type=float, default=0.0, help="GPU share of one Ray task (e.g. 0.25)")
    p.add_argument("--cpus-per-cell", type=float, default=1.0, help="CPUs of one Ray task")
    p.add_argument("--ray-storage", default="driver", choices=("driver", "shared"),
                   help="driver: workers return records and the driver writes them (no shared filesystem "
                        "needed); shared: workers write into the study directory on a shared filesystem")
    p.add_argument("--retries", type=int, default=2, help="retries of a failing work unit before it is reported")
    p.add_argument("--report", metavar="DIR", help="only analyse an existing study directory (no training)")
    p.add_argument("--analysis", action="append", default=[], metavar="KEY=VALUE",
                   help="override an analysis option, e.g. layer_split=train, layer_metric=layer_acc10, "
                        "network_metric=acc_goodness, level=0.8")
    p.add_argument("--no-report", action="store_true", help="run the cells, skip the analysis")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.report:
        analyze(Path(args.report), quiet=args.quiet, options=args.analysis)
        return 0
    if not args.study:
        raise ConfigError("name a study (e.g. depth-correlation or trifecta) or pass --report DIR")
    if args.seed_batch != "auto" and not args.seed_batch.isdigit():
        raise ConfigError(f"--seed-batch {args.seed_batch!r}: write auto or a positive number")
    study = Study.load(args.study, args.grid, args.layer_type, args.set)
    root = Path(args.out) / safe_component(args.name, "--name") if args.name else default_dir(args.out, study)
    executor_name = "process" if args.workers > 1 and args.executor == "in-process" else args.executor
    executor = make_executor(executor_name, args.workers, args.ray_address, args.gpus_per_cell, args.cpus_per_cell,
                             args.retries, args.ray_storage)
    try:
        result = StudyRunner(study, root, executor, args.seed_batch, args.retries, args.quiet).run()
    finally:
        executor.shutdown()
    if not args.no_report:
        analyze(root, quiet=args.quiet, options=args.analysis)
    if result["failures"]:
        raise FFHWError(f"{len(result['failures'])} work unit(s) failed (see cells/*/cell.json in {root}); "
                        f"run the same command again to retry them")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys
    from .errors import run_cli
    sys.exit(run_cli(main, sys.argv[1:]))
