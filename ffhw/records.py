"""Run directories: resolved config, tidy metrics, summary, model and a resumable checkpoint.

    <run>/config.toml     the fully resolved RunConfig
    <run>/metrics.csv     seed, epoch, split, layer, metric, value   (one row per number; layer "net" for
                          network-level metrics)
    <run>/summary.json    status, final test metrics per seed and over seeds, timings, code version
    <run>/model.pt        {"state_dict", "config"}: load with `load_model` (weights_only=True)
    <run>/checkpoint.pt   model and optimiser state after the last finished epoch, for --resume

Every file is written to a temporary name and renamed, so a kill never leaves a half-written file.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig, dumps, load_toml, safe_component
from .errors import ConfigError, RunDirError
from .files import atomic_torch_save, atomic_write, make_dir, process_code, read_json, torch_load

METRIC_FIELDS = ("seed", "epoch", "split", "layer", "metric", "value")


def epoch_value(text: str) -> int | float:
    """Epochs are whole numbers, except the fractional epochs of sub-epoch probes (split "probe")."""
    value = float(text)
    return int(value) if value.is_integer() else value


def read_config(path: Path, fix: str) -> RunConfig:
    """The RunConfig saved at `path` (config.toml), checked; errors name the file and `fix`."""
    try:
        return RunConfig.from_dict(load_toml(Path(path))).validate()
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(f"{message if str(path) in message else f'{path}: {message}'}; {fix}") from None


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    # ---- creation / opening ----
    @classmethod
    def create(cls, path: Path, cfg: RunConfig) -> "RunDir":
        path = Path(path)
        if path.is_dir() and any(path.iterdir()):
            raise RunDirError(f"{path} already holds results; pass --resume {path} to continue it, "
                              f"or choose another --name/--out")
        make_dir(path, "run directory")
        run = cls(path)
        atomic_write(run.path / "config.toml", dumps(cfg))
        return run

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        path = Path(path)
        if not (path / "config.toml").is_file():
            raise RunDirError(f"{path} is not an ffhw run directory (no config.toml); pass the directory a run wrote")
        return cls(path)

    def config(self) -> RunConfig:
        return read_config(self.path / "config.toml", "restore it from a copy, or start a new run")

    # ---- metrics ----
    def read_metrics(self) -> list[dict]:
        path = self.path / "metrics.csv"
        if not path.exists():
            return []
        try:
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                if tuple(reader.fieldnames or ()) != METRIC_FIELDS:
                    raise ValueError(f"header {reader.fieldnames} is not {','.join(METRIC_FIELDS)}")
                return [dict(row, seed=int(row["seed"]), epoch=epoch_value(row["epoch"]), value=float(row["value"]))
                        for row in reader]
        except (KeyError, TypeError, ValueError, UnicodeDecodeError, csv.Error) as exc:
            raise RunDirError(f"{path} is not a metrics file ffhw wrote ({type(exc).__name__}: {exc}); "
                              f"restore it, or delete the run directory and train again") from None

    def write_metrics(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "value": repr(float(row["value"]))})
        atomic_write(self.path / "metrics.csv", buf.getvalue())

    # ---- summary, model, checkpoint ----
    def write_summary(self, summary: dict) -> None:
        summary = {**summary, "code": process_code(), "machine": platform.node(),
                   "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write(self.path / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")

    def read_summary(self) -> dict:
        path = self.path / "summary.json"
        return read_json(path, "delete it; the next finished epoch writes it again") if path.exists() else {}

    def save_model(self, model, cfg: RunConfig) -> None:
        atomic_torch_save({"state_dict": model.state_dict(), "config": cfg.to_dict()}, self.path / "model.pt")

    # ---- the training loop's sink ----
    def record(self, rows: list[dict], summary: dict) -> None:
        """Everything measured so far: the rows first, then the summary that describes them."""
        self.write_metrics(rows)
        self.write_summary(summary)

    def save_checkpoint(self, state: dict) -> None:
        atomic_torch_save(state, self.path / "checkpoint.pt")

    def load_checkpoint(self) -> dict | None:
        path = self.path / "checkpoint.pt"
        if not path.exists():
            return None
        state = torch_load(path, "delete it to restart the run from scratch")
        if not isinstance(state, dict) or not {"epoch", "model", "layer_opts", "head_opt"} <= set(state):
            raise RunDirError(f"{path} is not an ffhw checkpoint; delete it to restart the run from scratch")
        return state


class NoRecords:
    """The sink of a run that writes nothing (the Python API without a directory, benchmarks, tests)."""
    path = None

    def record(self, rows: list[dict], summary: dict) -> None:
        pass

    def save_checkpoint(self, state: dict) -> None:
        pass

    def save_model(self, model, cfg: RunConfig) -> None:
        pass


# ---------------------------------------------------------------------------------------------- study cells
FINAL = ("complete", "diverged")  # cells in these states are never run again
CELL_FIX = "delete that cell's folder and run the study again to retrain it"


@dataclass
class Cell:
    key: str  # configuration key, e.g. depth-8_width-100
    factors: dict
    seed: int

    @property
    def id(self) -> str:
        return f"{self.key}_seed-{self.seed}"


def cell_key(factors: dict) -> str:
    """The configuration's name, which becomes part of its cells' directory names."""
    key = "_".join(f"{name.split('.')[-1]}-{value}" for name, value in factors.items())
    return safe_component(key, f"the cell name of factors {factors}")


def cell_dir(root: Path, cell: Cell) -> Path:
    return Path(root) / "cells" / cell.id


def read_cell(path: Path) -> dict:
    info = path / "cell.json"
    return read_json(info, CELL_FIX) if info.exists() else {}


def write_cell(root: Path, cell: Cell, config: dict, status: str, rows: list[dict] | None, info: dict) -> None:
    path = make_dir(cell_dir(root, cell), "cell directory")
    cfg = RunConfig.from_dict(copy.deepcopy(config))
    cfg.train.seed, cfg.train.seeds = cell.seed, 1
    atomic_write(path / "config.toml", dumps(cfg))
    if rows is not None:
        RunDir(path).write_metrics(rows)
    body = {"cell": cell.id, "key": cell.key, "factors": cell.factors, "seed": cell.seed, "status": status,
            **info, "code": process_code(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write(path / "cell.json", json.dumps(body, indent=2, sort_keys=True) + "\n")  # last: marks the cell done


def write_cells(root: Path, staging: Path, cells: list[tuple[Cell, dict, str, list[dict] | None, dict]]) -> None:
    """Write several cells as one step (a seed-batched unit's seeds): staged whole under `staging`, marked, then
    moved into root/cells. A process stopped while staging leaves no cell; one stopped while moving leaves a
    marked staging that `finish_writes` completes, so a unit never ends with some of its seeds recorded."""
    shutil.rmtree(staging, ignore_errors=True)
    for cell, config, status, rows, info in cells:
        write_cell(staging, cell, config, status, rows, info)
    atomic_write(staging / "whole", "")
    _move_staged(root, staging)


def finish_writes(root: Path, stagings) -> None:
    """Complete the marked stagings a stopped process left; drop the unmarked ones (their unit runs again)."""
    for staging in stagings:
        if (staging / "whole").exists():
            _move_staged(root, staging)
        else:
            shutil.rmtree(staging, ignore_errors=True)


def _move_staged(root: Path, staging: Path) -> None:
    make_dir(Path(root) / "cells", "cells directory")
    for src in sorted((staging / "cells").iterdir()) if (staging / "cells").exists() else []:
        _move_cell(src, Path(root) / "cells" / src.name)
    shutil.rmtree(staging)


def _move_cell(src: Path, dst: Path) -> None:
    if dst.exists():  # an unfinished or failed record of the same cell: the new one replaces it
        shutil.rmtree(dst)
    os.replace(src, dst)


def load_cells(root: Path) -> list[dict]:
    """Every recorded cell: its cell.json plus `rows` (metrics.csv)."""
    cells = []
    for path in sorted((Path(root) / "cells").glob("*/cell.json")):
        info = read_json(path, CELL_FIX)
        info["rows"] = RunDir(path.parent).read_metrics()
        cells.append(info)
    return cells


