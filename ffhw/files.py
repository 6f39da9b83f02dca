"""Reading and writing files safely: atomic writes, directories that can be written, JSON and torch files
that fail with one line naming the file and what to do, and the code version every record carries. The
lowest layer of every on-disk format."""
from __future__ import annotations

import functools
import io
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from ._version import __version__
from .config import repo_root
from .errors import RunDirError


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
    """ffhw version and, in a git checkout, the commit and whether the tree had uncommitted changes.

    Committed study records under experiments/results do not make a tree dirty: a study rewriting its own
    report mid-run changes no code."""
    info = {"ffhw": __version__, "torch": torch.__version__, "python": platform.python_version()}
    root = repo_root()
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                    ".", ":(exclude)experiments/results"],
                                   capture_output=True, text=True, timeout=5)
            info["dirty"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


@functools.lru_cache(maxsize=1)
def process_code() -> dict:
    """`code_version()` when this process first asked, which training does before its first step: the code
    a long run executes is what it loaded at the start, even if the checkout is edited while it runs."""
    return code_version()
