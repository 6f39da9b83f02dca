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

import csv
import io
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from . import __version__
from .config import RunConfig, dumps, load_toml, repo_root
from .errors import ConfigError, RunDirError

METRIC_FIELDS = ("seed", "epoch", "split", "layer", "metric", "value")


def make_dir(path: Path, what: str = "output directory") -> Path:
    """Create a directory (and its parents), or a RunDirError saying why it cannot be one."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise RunDirError(f"the {what} {path} cannot be created: {blocker} is a file; choose another location")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"the {what} {path} cannot be created ({exc.strerror}); choose a writable location") from None
    if not os.access(path, os.W_OK):
        raise RunDirError(f"the {what} {path} is not writable; choose a writable location")
    return path


def read_json(path: Path, fix: str) -> dict:
    """A JSON object from `path`, or a RunDirError naming the file and `fix` (what to do)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path} not found; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path} cannot be read ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} does not hold a JSON object; {fix}")
    return data


def read_config(path: Path, fix: str) -> RunConfig:
    """The RunConfig saved at `path` (config.toml), checked; errors name the file and `fix`."""
    try:
        return RunConfig.from_dict(load_toml(Path(path))).validate()
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(f"{message if str(path) in message else f'{path}: {message}'}; {fix}") from None


def torch_load(path: Path, fix: str, map_location="cpu"):
    """torch.load with weights only; a truncated, foreign or corrupt file is a RunDirError naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise RunDirError(f"{path} not found; {fix}") from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError... for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{path} cannot be read ({first[:200]}); {fix}") from None


def atomic_write(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def code_version() -> dict:
    """ffhw version and, in a git checkout, the commit and whether the tree had uncommitted changes."""
    info = {"ffhw": __version__, "torch": torch.__version__, "python": platform.python_version()}
    root = repo_root()
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5)
            info["dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


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
                return [dict(row, seed=int(row["seed"]), epoch=int(row["epoch"]), value=float(row["value"]))
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
        summary = {**summary, "code": code_version(), "machine": platform.node(),
                   "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write(self.path / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")

    def read_summary(self) -> dict:
        path = self.path / "summary.json"
        return read_json(path, "delete it; the next finished epoch writes it again") if path.exists() else {}

    def save_model(self, model: torch.nn.Module, cfg: RunConfig) -> None:
        atomic_torch_save({"state_dict": model.state_dict(), "config": cfg.to_dict()}, self.path / "model.pt")

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


def load_model(run_dir: str | os.PathLike, device: str = "cpu"):
    """Rebuild a trained network from `<run_dir>/model.pt` (or a model.pt path). Returns (model, config)."""
    from .model import FFNet  # here, not at the top: records must not depend on the model code

    path = Path(run_dir)
    path = path / "model.pt" if path.is_dir() else path
    if not path.is_file():
        raise RunDirError(f"{path} not found; train a model first (python -m ffhw.run ...)")
    fix = "it is not a model ffhw saved: train the run again (python -m ffhw.run ...)"
    blob = torch_load(path, fix, map_location=device)
    try:
        cfg = RunConfig.from_dict(blob["config"]).validate()
        state = blob["state_dict"]
        image_shape, num_classes = tuple(state["_image_shape"].tolist()), int(state["_num_classes"])
        model = FFNet(cfg, image_shape, num_classes).to(device)
        model.load_state_dict(state)
    except (KeyError, TypeError, AttributeError, RuntimeError, ConfigError) as exc:
        raise RunDirError(f"{path} cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); {fix}") from None
    model.eval()
    return model, cfg
