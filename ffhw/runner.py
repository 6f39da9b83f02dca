"""The study runner: a study's pending work units run on an executor, their records become cells, and
the study kind's analysis reads the cells back. Also the `study` command line.

    python -m ffhw.run study depth-correlation --layer-type spiking --grid cpu
    python -m ffhw.run study trifecta --layer-type quantized --grid cpu --workers 2
    python -m ffhw.run study depth-correlation --grid tiny --executor ray --ray-address auto
    python -m ffhw.run study --report experiments/results/depth-correlation-cpu-standard

See ffhw/study.py for what a study definition holds and how a study directory is laid out.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import shutil
import socket
import tempfile
import time
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

from .config import RunConfig, load_toml, parse_value, repo_root, safe_component
from .errors import ConfigError, DivergenceError, FFHWError
from .files import atomic_write, make_dir, process_code
from .records import FINAL, RunDir, cell_dir, finish_writes, load_cells, read_cell, write_cell, write_cells
from .study import Study, Unit, _grid_part


def _seeds_grew(before: dict, after: dict) -> bool:
    """Whether two grid parts differ only by a larger seed count (a study may gain seeds, never lose them)."""
    def rest(part: dict) -> dict:
        return part | {"grid": {k: v for k, v in part["grid"].items() if k != "seeds"}}

    return rest(before) == rest(after) and int(after["grid"].get("seeds", 1)) > int(before["grid"].get("seeds", 1))


# ---------------------------------------------------------------------------------------------- one unit
def unit_work_dir(root: Path, unit: Unit) -> Path:
    """Where a unit trains when workers write into the study directory: its run directory and checkpoint."""
    return root / "work" / unit.id


def write_unit_cells(root: Path, unit: Unit, entries: dict) -> None:
    """A unit's cells land together (staged in its work directory), so a stop never splits its seeds."""
    cells = [(c, unit.config, entries[c.id]["status"], entries[c.id]["rows"], entries[c.id]["info"])
             for c in unit.cells()]
    write_cells(root, unit_work_dir(root, unit) / "landing", cells)


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
        work = unit_work_dir(root, unit)
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
    info = {"unit": unit.id, "unit_seeds": unit.seeds, "unit_seconds": time.perf_counter() - t0,
            "train_seconds_unit": summary.get("train_seconds"), "device": summary.get("device"),
            "epochs_completed": summary.get("epochs_completed"), **extra}
    if status == "diverged":
        info["diverged"] = summary.get("diverged")
    entries = {c.id: {"status": status, "rows": [r for r in rows if r["seed"] == c.seed], "info": info}
               for c in unit.cells()}
    out = {"unit": unit.id, "status": status, "cells": entries}
    if root is not None:
        write_unit_cells(root, unit, entries)
        out["cells"] = {cid: {"status": status} for cid in entries}
    if root is not None and status == "complete":
        for name in ("checkpoint.pt",):  # the model stays (model.pt); the optimiser state is no longer needed
            (work / name).unlink(missing_ok=True)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------- the runner
@contextlib.contextmanager
def study_lock(root: Path):
    """One runner per study directory: a second one would train the same pending units and overwrite their
    checkpoints. A lock left by a runner that died (its process is gone) is taken over."""
    path = root / "work" / "runner.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            pid, _, host = path.read_text().partition(" ")
            if host.strip() == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)  # stale: its runner is gone
                continue
            raise ConfigError(f"{root} is being run by process {pid} on {host.strip() or '?'}; wait for it or stop "
                              f"it (if no runner is left, delete {path})") from None
    else:
        raise ConfigError(f"could not take {path}; delete it if no runner is using {root}")
    with os.fdopen(fd, "w") as f:
        f.write(mine)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class StudyRunner:
    def __init__(self, study: Study, root: Path, executor, seed_batch: int | str = "auto", retries: int = 2,
                 quiet: bool = False, console=None, only: dict[str, list[str]] | None = None):
        from rich.console import Console

        self.study, self.root, self.executor = study, Path(root), executor
        self.only = study.check_only(only or {})  # this invocation runs these cells; the rest wait for the next
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
            before = _grid_part(saved["definition"], saved["grid"], saved["layer_type"])
            after = _grid_part(mine["definition"], mine["grid"], mine["layer_type"])
            if before != after:
                if not _seeds_grew(before, after):
                    raise ConfigError(f"the definition of study {self.study.name!r} changed since {self.root} was "
                                      f"started; restore it, or pass --name to start a new study directory")
                # more seeds only adds cells: the finished ones stay valid, and the record says what is asked now
                atomic_write(frozen_path, tomli_w.dumps(mine))
                self.console.print(f"grid {mine['grid']!r} grew from {before['grid'].get('seeds', 1)} to "
                                   f"{after['grid'].get('seeds', 1)} seeds; finished cells are kept")
            return
        make_dir(self.root, "study directory")
        atomic_write(frozen_path, tomli_w.dumps(mine))

    def pending_units(self) -> tuple[list[Unit], int, int]:
        units, done, total = [], 0, 0
        for unit in self.study.units(self.seed_batch, getattr(self.executor, "device_type", None)):
            todo = [c.seed for c in unit.cells() if read_cell(cell_dir(self.root, c)).get("status") not in FINAL]
            total += len(unit.seeds)
            done += len(unit.seeds) - len(todo)
            if not todo or not self.study.selected(unit.factors, self.only):
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

    def settle(self, unit: Unit, future, queue: deque, attempts: dict, failures: dict) -> bool:
        """Record a finished unit's cells, or queue it again (a retry; a diverged seed batch one seed at a time).
        Returns whether its cells are now settled."""
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - any failure of a unit is retried, then reported
            attempts[unit.id] = attempts.get(unit.id, 0) + 1
            cause = getattr(exc, "cause", None) or exc  # Ray wraps the worker's exception
            message = f"{type(cause).__name__}: {cause}".splitlines()[0]
            if attempts[unit.id] <= self.retries:
                self.console.print(f"[yellow]{unit.id} failed ({message}); retry {attempts[unit.id]} of {self.retries}")
                queue.append(unit)
                return False
            failures[unit.id] = message
            for cell in unit.cells():
                write_cell(self.root, cell, unit.config, "failed", None,
                           {"unit": unit.id, "error": message, "traceback": traceback.format_exception(cause)[-3:]})
            self.console.print(f"[red]{unit.id} failed after {self.retries} retries: {message}")
            return True
        if result["status"] == "diverged" and len(unit.seeds) > 1:
            # One seed's divergence stops the batched run: train each seed alone to find which.
            self.console.print(f"[yellow]{unit.id} diverged; training its seeds one at a time")
            queue.extend(unit.with_seeds([s]) for s in unit.seeds)
            return False
        if all("rows" in entry for entry in result["cells"].values()):  # the worker had no access to the study directory
            write_unit_cells(self.root, unit, result["cells"])
        if result["status"] == "diverged":
            self.console.print(f"[yellow]{unit.id} diverged: marked, moving on")
        return True

    def run(self) -> dict:
        process_code()  # cells this process writes name the code it started with, not a later checkout
        self.prepare()
        with study_lock(self.root):
            return self._run_pending()

    def _run_pending(self) -> dict:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        finish_writes(self.root, (self.root / "work").glob("*/landing"))  # cells a stopped runner was writing
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
                    if self.settle(unit, future, queue, attempts, failures):
                        progress.advance(task, len(unit.seeds))
        counts: dict[str, int] = {}
        for info in (read_cell(p.parent) for p in (self.root / "cells").glob("*/cell.json")):
            counts[info["status"]] = counts.get(info["status"], 0) + 1
        self.console.print("cells: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        return {"counts": counts, "failures": failures}


# ---------------------------------------------------------------------------------------------- CLI
def parse_only(items: list[str]) -> dict[str, list[str]]:
    only: dict[str, list[str]] = {}
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or not key.strip() or not values.strip():
            raise ConfigError(f"--only {item!r}: write FACTOR=VALUE[,VALUE...], e.g. --only data.dataset=mnist")
        only.setdefault(key.strip(), []).extend(v.strip() for v in values.split(",") if v.strip())
    return only


def default_dir(out: str, study: Study) -> Path:
    return Path(out) / safe_component(f"{study.name}-{study.grid_name}-{study.layer_type}", "study directory name")


def analyze(root: Path, quiet: bool = False, options: list[str] | None = None) -> dict:
    """Analyse a study directory from its records; `options` (KEY=VALUE) override the definition's
    [analysis] table, e.g. layer_split=train or layer_metric=layer_acc10."""
    from .studies import get_kind

    frozen = root / "study.toml"
    if not frozen.exists():
        raise ConfigError(f"{root} is not a study directory (no study.toml); run a study first")
    try:
        study = Study.from_frozen(load_toml(frozen))
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{frozen} is not a study record ffhw wrote (missing {exc}); restore it") from None
    source = Path(study.source) if Path(study.source).is_absolute() else repo_root() / study.source
    if study.source and source.is_file():  # analysis options may evolve after the cells ran; what the cells trained may not
        current = load_toml(source)
        if (_grid_part(current, study.grid_name, study.layer_type)
                == _grid_part(study.definition, study.grid_name, study.layer_type)):
            study.definition["analysis"] = current.get("analysis", {})
            current_grid = current.get("grids", {}).get(study.grid_name, {})
            if "note" in current_grid:  # the note describes the grid and may be corrected after the cells ran
                study.definition.setdefault("grids", {}).setdefault(study.grid_name, {})["note"] = current_grid["note"]
    for item in options or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--analysis {item!r}: write KEY=VALUE, e.g. --analysis layer_split=train")
        study.definition.setdefault("analysis", {})[key.strip()] = parse_value(value)
    if not load_cells(root):
        raise ConfigError(f"{root} holds no recorded cells yet; run the study first")
    return get_kind(study.definition.get("kind", "")).analyze(root, study, quiet=quiet)


def main(argv: list[str]) -> int:
    from .layers import LAYER_TYPES
    from .executors import EXECUTORS, RAY_STORAGES, make_executor

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
    p.add_argument("--only", action="append", default=[], metavar="FACTOR=V1,V2",
                   help="run only the cells with these factor values this time (repeatable; the others stay "
                        "pending for a later run), e.g. --only data.dataset=mnist --only variant=symba,trifecta")
    p.add_argument("--seed-batch", default="auto",
                   help="seeds trained side by side per work unit: auto (by network size and device) or a number")
    p.add_argument("--executor", default="in-process", choices=EXECUTORS)
    p.add_argument("--workers", type=int, default=1, help="local worker processes (implies --executor process)")
    p.add_argument("--ray-address", help="Ray cluster address (e.g. auto, or ray://HOST:10001); default: start "
                                         "a local Ray instance")
    p.add_argument("--gpus-per-cell", type=float, default=0.0, help="GPU share of one Ray task (e.g. 0.25)")
    p.add_argument("--cpus-per-cell", type=float, default=1.0, help="CPUs of one Ray task")
    p.add_argument("--ray-storage", default="driver", choices=RAY_STORAGES,
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
        result = StudyRunner(study, root, executor, args.seed_batch, args.retries, args.quiet,
                             only=parse_only(args.only)).run()
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
