"""Figures of the depth/correlation study, from `depth_correlation.summarize`'s numbers only.

Axes are fixed to the metric's range (no auto-zoom that makes a flat line look like data); chance and level
lines are drawn; censored crossings are drawn as censored; legends sit outside the data; configurations that
share an axis are offset so none hides another."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..stats import LEFT, RIGHT
from .common import pyplot, save_figure

CHANCE = {"layer_acc": 0.5, "layer_acc10": 0.1}
MARKERS = "osD^vP*X"


def _nanmean(a, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis), np.nanstd(a, axis)


def _layout(results: dict):
    return sorted({e["depth"] for e in results.values()}), sorted({e["width"] for e in results.values()})


def _reference_lines(ax, opts: dict, network: bool = True) -> None:
    ax.axhline(opts["level"], color="tab:red", lw=0.8, ls=":", label=f"level {opts['level']}")
    ax.axhline(CHANCE.get(opts["layer_metric"], 0.5), color="grey", lw=0.8, ls="--", label="layer chance")
    if network:
        ax.axhline(0.1, color="black", lw=0.6, ls="-.", label="network chance (10 classes)")


def figure_curves(results: dict, opts: dict, path: Path) -> None:
    plt = pyplot()
    depths, widths = _layout(results)
    fig, axes = plt.subplots(len(depths), len(widths), figsize=(4.6 * len(widths) + 1.5, 2.9 * len(depths) + 0.8),
                             squeeze=False, sharey=True, layout="constrained")
    cmap = plt.get_cmap("viridis")
    for e in results.values():
        ax = axes[depths.index(e["depth"])][widths.index(e["width"])]
        if e["layer"].size == 0:
            ax.text(0.5, 0.5, "no complete cells", ha="center", transform=ax.transAxes)
            continue
        n_layers = e["layer"].shape[2]
        mean, _ = _nanmean(e["layer"], 0)
        net, _ = _nanmean(e["net"], 0)
        for k in range(n_layers):
            ax.plot(e["epochs"], mean[:, k], color=cmap(k / max(1, n_layers - 1)), lw=1.2)
        ax.plot(e["epochs"], net, "k--", lw=1.4, label=f"network ({e['network_metric']})")
        _reference_lines(ax, opts)
        prefix = " (prefix)" if e.get("prefix_of") else ""
        ax.set_title(f"{e['depth']} x {e['width']}{prefix}, {len(e['seeds'])} seeds", fontsize=9)
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for row in axes:
        row[0].set_ylabel(f"accuracy ({opts['layer_split']})")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=axes, label="layer: relative depth", shrink=0.6)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle(f"Per-layer {opts['layer_metric']} (solid, by depth) and network accuracy (dashed), mean over seeds",
                 fontsize=10)
    save_figure(fig, path)


def band_layers(n_layers: int) -> list[int]:
    return sorted({0, n_layers // 4, n_layers // 2, (3 * n_layers) // 4, n_layers - 1})


def figure_bands(results: dict, opts: dict, path: Path) -> str | None:
    """+/- 1 std over seeds for a few layers of the deepest, widest configuration (the paper's Fig. 3)."""
    candidates = [e for e in results.values() if e["layer"].size]
    if not candidates:
        return None
    e = max(candidates, key=lambda e: (e["depth"], e["width"], len(e["seeds"])))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
    cmap = plt.get_cmap("viridis")
    n_layers = e["layer"].shape[2]
    for k in band_layers(n_layers):
        mean, std = _nanmean(e["layer"][:, :, k], 0)
        color = cmap(k / max(1, n_layers - 1))
        ax.plot(e["epochs"], mean, color=color, label=f"layer {k}")
        ax.fill_between(e["epochs"], mean - std, mean + std, color=color, alpha=0.2, lw=0)
    _reference_lines(ax, opts, network=False)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{opts['layer_metric']} ({opts['layer_split']})")
    ax.set_title(f"{e['depth']} x {e['width']}: mean +/- 1 std over {len(e['seeds'])} seeds", fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return f"{e['depth']}x{e['width']}"


def _shown(results: dict, design: str, width: int) -> list[dict]:
    """Configurations drawn in a width's panel: all of them when independent; else only the deepest (the
    shallower ones are its prefixes: their points would lie exactly on top of it)."""
    same = sorted((e for e in results.values() if e["width"] == width and "delay" in e), key=lambda e: e["depth"])
    return same if design == "independent" else same[-1:]


def figure_epoch_to_level(results: dict, opts: dict, design: str, path: Path) -> None:
    plt = pyplot()
    _, widths = _layout(results)
    fig, axes = plt.subplots(1, len(widths), figsize=(6 * len(widths), 4), squeeze=False, layout="constrained")
    for ax, width in zip(axes[0], widths):
        shown = _shown(results, design, width)
        for i, e in enumerate(shown):
            time, status = e["crossing_time"], e["crossing_status"]
            n_seeds, n_layers = time.shape
            offset = (i - (len(shown) - 1) / 2) * 0.15
            color = f"C{i}"
            x = np.arange(n_layers) + offset
            jitter = np.linspace(-0.05, 0.05, n_seeds) if n_seeds > 1 else np.zeros(1)
            for s in range(n_seeds):
                for k in range(n_layers):
                    marker, fill = {LEFT: ("v", "none"), RIGHT: ("^", "none")}.get(status[s, k], ("o", color))
                    ax.plot(x[k] + jitter[s], time[s, k], marker=marker, ms=4, color=color, mfc=fill, ls="none")
            mean, _ = _nanmean(time, 0)
            ax.plot(x, mean, color=color, lw=1.2, label=f"{e['depth']} layers: mean (censored at bounds)")
        ax.plot([], [], "o", color="grey", ms=4, label="crossing (per seed)")
        ax.plot([], [], "^", color="grey", mfc="none", ms=4, label="never reached: after this (right-censored)")
        ax.plot([], [], "v", color="grey", mfc="none", ms=4, label="already there: by this (left-censored)")
        note = "" if design == "independent" else " (shallower configurations are its prefixes)"
        ax.set_title(f"width {width}{note}", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"epoch at which {opts['layer_metric']} first reaches {opts['level']}")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.14), ncol=2)
    fig.suptitle("When each layer reaches the level, per seed (interpolated)", fontsize=10)
    save_figure(fig, path)


def figure_correlation(results: dict, design: str, path: Path) -> None:
    """Per-seed r combined across seeds (Fisher z, t interval) per layer; the progress-controlled partial r
    below it; each configuration's log(epoch) baseline as a dashed line."""
    plt = pyplot()
    _, widths = _layout(results)
    fig, axes = plt.subplots(2, len(widths), figsize=(8.5 * len(widths), 7.5), squeeze=False, layout="constrained")
    lowest = 0.0
    for col, width in enumerate(widths):
        same = sorted((e for e in results.values() if e["width"] == width and "r" in e), key=lambda e: e["depth"])
        for i, e in enumerate(same):
            offset = (i - (len(same) - 1) / 2) * 0.12
            for row, name in enumerate(("pearson", "partial")):
                per = e["r"][name]
                r = np.array([c["r"] for c in per])
                lo = np.array([c["ci"][0] for c in per])
                hi = np.array([c["ci"][1] for c in per])
                x = np.arange(len(r)) + offset
                yerr = np.nan_to_num(np.stack([r - lo, hi - r]), nan=0.0)
                if row == 0:
                    lowest = min(lowest, np.nanmin(np.append(lo, 0.0)))
                axes[row][col].errorbar(x, r, yerr=yerr, marker=MARKERS[i % len(MARKERS)], ms=4, capsize=2, lw=1,
                                        color=f"C{i}", label=f"{e['depth']} layers")
            axes[0][col].axhline(e["r"]["baseline"]["r"], color=f"C{i}", ls="--", lw=0.9,
                                 label=f"{e['depth']} layers: r of log(epoch) with the network")
        for row, title in enumerate(("Pearson r with network accuracy", "partial r, training progress removed")):
            ax = axes[row][col]
            ax.axhline(0, color="grey", lw=0.6)
            ax.set_ylim((lowest - 0.05, 1.02) if row == 0 else (-1.05, 1.05))
            ax.set_title(f"width {width}: {title}", fontsize=9)
            ax.set_xlabel("layer")
            ax.set_ylabel("r")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    note = "" if design == "independent" else "\nshallower networks are prefixes of the deepest (the same layers, their own head)"
    fig.suptitle(f"Per-seed correlation over epochs: mean over seeds (Fisher z), 95% t intervals{note}", fontsize=10)
    save_figure(fig, path)


def draw_all(results: dict, opts: dict, design: str, folder: Path) -> list[str]:
    """Every figure; returns the names drawn, for the report."""
    figure_curves(results, opts, folder / "layer_accuracy.png")
    names = ["layer_accuracy"]
    if figure_bands(results, opts, folder / "std_bands.png"):
        names.append("std_bands")
    if any("delay" in e for e in results.values()):
        figure_epoch_to_level(results, opts, design, folder / "epoch_to_level.png")
        figure_correlation(results, design, folder / "correlation.png")
        names += ["epoch_to_level", "correlation"]
    return names
