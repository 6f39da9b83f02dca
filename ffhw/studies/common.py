"""What every study analysis needs: cell records as arrays, figure saving, Markdown tables."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np


def group_cells(cells: list[dict]) -> dict[str, list[dict]]:
    """Cells by configuration key, in the order of the grid (the order cells were listed)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for cell in cells:
        groups[cell["key"]].append(cell)
    for key in groups:
        groups[key].sort(key=lambda c: c["seed"])
    return dict(groups)


def unfinished(study, finished: list[tuple[dict, int]]) -> list[tuple[dict, int, int]]:
    """(factors, seeds finished, seeds asked) of each grid configuration with fewer finished seeds than the
    grid asks: reports name them, since every number and verdict is over finished cells only."""
    out = []
    for factors in study.all_configurations():
        have = next((n for f, n in finished if f == factors), 0)
        want = len(study.seeds_for(factors))
        if have < want:
            out.append((factors, have, want))
    return out


def report_command(root: Path) -> str:
    """The command that regenerates a report, with the study directory relative to the working directory
    when it lies under it: a report must not carry one machine's absolute path."""
    root = Path(root)
    try:
        shown = root.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = root
    return f"python -m ffhw.run study --report {shown.as_posix()}"


def unfinished_label(name: str, have: int, want: int) -> str:
    return name if have == 0 else f"{name} ({have} of {want} seeds finished)"


def curves(cells: list[dict], split: str, metric: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-epoch, per-layer values of one metric for the complete cells of one configuration.

    Returns (epochs [E], values [S, E, L], layers L); NaN where a value is missing."""
    done = [c for c in cells if c["status"] == "complete"]
    rows = [(c_i, r) for c_i, c in enumerate(done) for r in c["rows"]
            if r["split"] == split and r["metric"] == metric and r["layer"] != "net"]
    if not rows:
        return np.zeros(0), np.zeros((len(done), 0, 0)), 0
    epochs = sorted({r["epoch"] for _, r in rows})
    n_layers = 1 + max(int(r["layer"]) for _, r in rows)
    index = {e: i for i, e in enumerate(epochs)}
    out = np.full((len(done), len(epochs), n_layers), np.nan)
    for c_i, r in rows:
        out[c_i, index[r["epoch"]], int(r["layer"])] = r["value"]
    return np.asarray(epochs, dtype=float), out, n_layers


def net_curve(cells: list[dict], split: str, metric: str, epochs: np.ndarray) -> np.ndarray:
    """Per-epoch network metric [S, E] for the complete cells, aligned to `epochs`."""
    done = [c for c in cells if c["status"] == "complete"]
    index = {int(e): i for i, e in enumerate(epochs)}
    out = np.full((len(done), len(epochs)), np.nan)
    for c_i, c in enumerate(done):
        for r in c["rows"]:
            if r["split"] == split and r["layer"] == "net" and r["metric"] == metric and r["epoch"] in index:
                out[c_i, index[r["epoch"]]] = r["value"]
    return out


def final_value(cell: dict, split: str, layer: str, metric: str) -> float:
    values = [(r["epoch"], r["value"]) for r in cell["rows"]
              if r["split"] == split and r["layer"] == layer and r["metric"] == metric]
    return max(values)[1] if values else math.nan


def has_metric(cells: list[dict], split: str, layer: str, metric: str) -> bool:
    return any(r["split"] == split and r["layer"] == layer and r["metric"] == metric
               for c in cells for r in c["rows"])


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value, spec: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return spec.format(value)


def save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})  # no timestamps: stable files
    import matplotlib.pyplot as plt
    plt.close(fig)


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def status_counts(cells: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for c in cells:
        counts[c["status"]] += 1
    return dict(counts)


def json_ready(obj):
    """Tuples to lists, NaN to None, numpy scalars to Python: analysis.json stays valid, portable JSON."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    return obj
