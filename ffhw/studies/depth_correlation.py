"""Depth/correlation study (Adamson 2025, arXiv 2504.11229): how depth delays each layer's learning and
how each layer's accuracy tracks the network's.

Factors `depth` and `width` make `model.hidden = [width] * depth`. The analysis reads cells/ only:

- per-layer accuracy vs epoch, mean over seeds, one subplot per (depth, width), coloured by relative
  depth, network accuracy dashed (paper Fig. 2); +/- 1 std bands for chosen layers (Fig. 3);
- the epoch at which each layer first reaches the level (0.7) vs layer depth (Fig. 4), with the slope of
  that line and its bootstrap over seeds;
- Pearson and Spearman correlation of each layer's accuracy with the network's over all epochs and seeds,
  with 95% intervals (Fig. 5), and the slope of correlation vs depth with its bootstrap over seeds.

Layer accuracy: `layer_metric` = layer_acc (the paper's binary positive/negative accuracy, chance 0.5)
or layer_acc10 (argmax of that layer's goodness over labels), on `layer_split` = val (held out, default)
or train (running mean over the epoch's training batches). Network accuracy: `network_metric` = acc_head
(loeweX's linear head) or acc_goodness (argmax of summed goodness).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..stats import correlation, first_crossing, mean_std, slope, slope_bootstrap
from ..errors import ConfigError
from .common import (curves, fmt, group_cells, has_metric, json_ready, markdown_table, net_curve, pyplot,
                     save_figure, status_counts, final_value)

FACTORS = ("depth", "width")
ANALYSIS_DEFAULTS = {"level": 0.7, "layer_metric": "layer_acc", "layer_split": "val",
                     "network_metric": "acc_head", "bootstrap": 2000}


def handles(factor: str) -> bool:
    return factor in FACTORS


def apply(cfg, factors: dict, definition: dict) -> None:
    if "depth" in factors or "width" in factors:
        depth = int(factors.get("depth", len(cfg.model.hidden)))
        width = int(factors.get("width", cfg.model.hidden[0]))
        if depth < 1 or width < 1:
            raise ConfigError(f"depth = {depth} and width = {width} must be positive")
        cfg.model.hidden = [width] * depth


# ---------------------------------------------------------------------------------------------- numbers
def correlation_bootstrap(layer: np.ndarray, net: np.ndarray, samples: int, seed: int = 0) -> dict:
    """Correlation (Pearson, over all epochs and seeds) of every layer with the network, and the slope of
    that correlation against layer index, with a bootstrap over seeds. layer [S, E, L], net [S, E]."""
    n_seeds, _, n_layers = layer.shape
    per_layer = [correlation(layer[:, :, k], net) for k in range(n_layers)]
    pearson = np.array([c["pearson"] for c in per_layer])
    rng = np.random.default_rng(seed)
    boot_slopes = []
    x = np.arange(n_layers, dtype=float)
    for _ in range(samples if n_seeds > 1 else 0):
        d = rng.integers(0, n_seeds, n_seeds)
        r = [_pearson(layer[d, :, k], net[d]) for k in range(n_layers)]
        boot_slopes.append(slope(x, np.array(r)))
    boot = np.array([b for b in boot_slopes if np.isfinite(b)])
    ci = tuple(np.percentile(boot, [2.5, 97.5])) if len(boot) else (math.nan, math.nan)
    return {"per_layer": per_layer, "slope": slope(x, pearson), "slope_ci": ci,
            "p_negative": float((boot < 0).mean()) if len(boot) else math.nan}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def summarize(cells: list[dict], options: dict) -> dict:
    """Every number of the report, per configuration."""
    opts = {**ANALYSIS_DEFAULTS, **options}
    results = {}
    for key, group in group_cells(cells).items():
        factors = group[0]["factors"]
        epochs, layer, n_layers = curves(group, opts["layer_split"], opts["layer_metric"])
        network_metric = opts["network_metric"]
        if not has_metric(group, "val", "net", network_metric):
            network_metric = "acc_goodness"  # networks trained without the head
        net = net_curve(group, "val", network_metric, epochs)
        entry = {"factors": factors, "depth": int(factors.get("depth", n_layers)),
                 "width": int(factors.get("width", 0)), "seeds": [c["seed"] for c in group if c["status"] == "complete"],
                 "status": status_counts(group), "epochs": epochs, "layer": layer, "net": net,
                 "network_metric": network_metric}
        if layer.size == 0:
            results[key] = entry
            continue
        crossing = first_crossing(np.moveaxis(layer, 1, 2), opts["level"], epochs)  # [S, L]
        entry["epoch_to_level"] = crossing
        entry["never_reached"] = int(np.isnan(crossing).all(0).sum())
        entry["slope"] = slope_bootstrap(np.arange(n_layers), crossing, samples=opts["bootstrap"])
        entry["correlation"] = correlation_bootstrap(layer, net, samples=min(opts["bootstrap"], 500))
        done = [c for c in group if c["status"] == "complete"]
        entry["test_net"] = mean_std([final_value(c, "test", "net", network_metric) for c in done])
        entry["final_layer"] = [mean_std(layer[:, -1, k]) for k in range(n_layers)]
        results[key] = entry
    return results


# ---------------------------------------------------------------------------------------------- figures
def _layout(results: dict):
    depths = sorted({e["depth"] for e in results.values()})
    widths = sorted({e["width"] for e in results.values()})
    return depths, widths


def figure_curves(results: dict, opts: dict, path: Path) -> None:
    plt = pyplot()
    depths, widths = _layout(results)
    fig, axes = plt.subplots(len(depths), len(widths), figsize=(4.2 * len(widths), 2.8 * len(depths)),
                             squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    for e in results.values():
        if e["layer"].size == 0:
            continue
        ax = axes[depths.index(e["depth"])][widths.index(e["width"])]
        n_layers = e["layer"].shape[2]
        with np.errstate(all="ignore"):
            mean = np.nanmean(e["layer"], axis=0)
            net = np.nanmean(e["net"], axis=0)
        for k in range(n_layers):
            ax.plot(e["epochs"], mean[:, k], color=cmap(k / max(1, n_layers - 1)), lw=1.2)
        ax.plot(e["epochs"], net, "k--", lw=1.2, label=f"network ({e['network_metric']})")
        ax.axhline(opts["level"], color="grey", lw=0.6, ls=":")
        ax.set_title(f"{e['depth']} x {e['width']} ({len(e['seeds'])} seeds)", fontsize=9)
        ax.set_ylim(0.4, 1.0)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for row in axes:
        row[0].set_ylabel(f"{opts['layer_metric']} ({opts['layer_split']})")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=axes, label="relative depth (layer / (layers - 1))", shrink=0.6)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Per-layer accuracy vs epoch, mean over seeds (network dashed)")
    save_figure(fig, path)


def band_layers(n_layers: int) -> list[int]:
    return sorted({0, n_layers // 4, n_layers // 2, (3 * n_layers) // 4, n_layers - 1})


def figure_bands(results: dict, opts: dict, path: Path) -> str | None:
    """+/- 1 std bands for the deepest, widest configuration (the paper's 32 x 1000 over 30 seeds)."""
    candidates = [e for e in results.values() if e["layer"].size]
    if not candidates:
        return None
    e = max(candidates, key=lambda e: (e["depth"], e["width"], len(e["seeds"])))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    cmap = plt.get_cmap("viridis")
    n_layers = e["layer"].shape[2]
    for k in band_layers(n_layers):
        with np.errstate(all="ignore"):
            mean, std = np.nanmean(e["layer"][:, :, k], 0), np.nanstd(e["layer"][:, :, k], 0)
        color = cmap(k / max(1, n_layers - 1))
        ax.plot(e["epochs"], mean, color=color, label=f"layer {k}")
        ax.fill_between(e["epochs"], mean - std, mean + std, color=color, alpha=0.2, lw=0)
    ax.axhline(opts["level"], color="grey", lw=0.6, ls=":")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{opts['layer_metric']} ({opts['layer_split']})")
    ax.set_title(f"{e['depth']} x {e['width']}: mean +/- 1 std over {len(e['seeds'])} seeds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return f"{e['depth']}x{e['width']}"


def figure_epoch_to_level(results: dict, opts: dict, path: Path) -> None:
    plt = pyplot()
    depths, widths = _layout(results)
    fig, axes = plt.subplots(1, len(widths), figsize=(5 * len(widths), 3.6), squeeze=False)
    for e in results.values():
        if "epoch_to_level" not in e:
            continue
        ax = axes[0][widths.index(e["width"])]
        with np.errstate(all="ignore"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(e["epoch_to_level"], 0)
                std = np.nanstd(e["epoch_to_level"], 0)
        x = np.arange(len(mean))
        s = e["slope"]
        ax.errorbar(x, mean, yerr=std, marker="o", ms=3, capsize=2,
                    label=f"{e['depth']} layers: slope {s['slope']:.2f} [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}]")
    for w, ax in zip(widths, axes[0]):
        ax.set_title(f"width {w}")
        ax.set_xlabel("layer")
        ax.set_ylabel(f"first epoch with accuracy >= {opts['level']}")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Epoch at which each layer first reaches the level (mean +/- std over seeds)")
    save_figure(fig, path)


def figure_correlation(results: dict, path: Path) -> None:
    plt = pyplot()
    depths, widths = _layout(results)
    fig, axes = plt.subplots(2, len(widths), figsize=(5 * len(widths), 6), squeeze=False, sharey="row")
    for e in results.values():
        if "correlation" not in e:
            continue
        col = widths.index(e["width"])
        for row, name in enumerate(("pearson", "spearman")):
            per = e["correlation"]["per_layer"]
            r = np.array([c[name] for c in per])
            lo = np.array([c[f"{name}_ci"][0] for c in per])
            hi = np.array([c[f"{name}_ci"][1] for c in per])
            x = np.arange(len(r))
            axes[row][col].errorbar(x, r, yerr=[r - lo, hi - r], marker="o", ms=3, capsize=2,
                                    label=f"{e['depth']} layers")
    for col, w in enumerate(widths):
        for row, name in enumerate(("Pearson", "Spearman")):
            ax = axes[row][col]
            ax.set_title(f"width {w}: {name} r with network accuracy", fontsize=9)
            ax.set_xlabel("layer")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("Correlation of each layer's accuracy with the network's (all epochs and seeds; 95% CI)")
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- report
def claims(results: dict) -> list[dict]:
    """The paper's findings, each checked against these records with its evidence."""
    entries = [e for e in results.values() if "slope" in e]
    out = []
    positive = [e for e in entries if e["slope"]["ci"][0] > 0]
    delayed = [e for e in entries if np.isfinite(e["slope"]["slope"])]
    out.append({
        "claim": "Deeper layers reach the accuracy level later (positive slope of epoch-to-0.7 vs depth).",
        "verdict": ("reproduced" if delayed and len(positive) == len(delayed) else
                    "partly reproduced" if positive else "not reproduced"),
        "evidence": "; ".join(f"{e['depth']}x{e['width']}: slope {e['slope']['slope']:.3f} epochs/layer, "
                              f"95% CI [{e['slope']['ci'][0]:.3f}, {e['slope']['ci'][1]:.3f}]" for e in delayed)
                    or "no configuration had layers reaching the level"})
    widths = sorted({e["width"] for e in entries})
    if len(widths) >= 2:
        pairs = []
        for d in sorted({e["depth"] for e in entries}):
            by_w = {e["width"]: e for e in entries if e["depth"] == d}
            if widths[0] in by_w and widths[-1] in by_w:
                pairs.append((d, by_w[widths[0]]["slope"]["slope"], by_w[widths[-1]]["slope"]["slope"]))
        steeper = [p for p in pairs if np.isfinite(p[1]) and np.isfinite(p[2]) and p[2] > p[1]]
        out.append({
            "claim": f"The delay grows more with depth at the larger width ({widths[-1]} vs {widths[0]}).",
            "verdict": ("reproduced" if pairs and len(steeper) == len(pairs) else
                        "partly reproduced" if steeper else "not reproduced"),
            "evidence": "; ".join(f"depth {d}: slope {a:.3f} (width {widths[0]}) vs {b:.3f} (width {widths[-1]})"
                                  for d, a, b in pairs) or "no depth has both widths"})
    else:
        out.append({"claim": "The delay grows more with depth at the larger width (paper: 1000 vs 100).",
                    "verdict": "not tested", "evidence": f"this grid has one width ({widths[0] if widths else '-'})"})
    first = [e["correlation"]["per_layer"][0]["pearson"] for e in entries]
    falling = [e for e in entries if e["correlation"]["slope_ci"][1] < 0]
    deep = [e for e in entries if e["depth"] > 2]
    out.append({
        "claim": "Layer 0's accuracy correlates strongly with the network's (r about 0.9).",
        "verdict": "reproduced" if first and np.nanmin(first) >= 0.8 else "not reproduced",
        "evidence": "; ".join(f"{e['depth']}x{e['width']}: r = {e['correlation']['per_layer'][0]['pearson']:.3f}"
                              for e in entries)})
    out.append({
        "claim": "Correlation falls with depth (paper: about 0.3-0.5 near layer 30).",
        "verdict": ("reproduced" if deep and all(e in falling for e in deep) else
                    "partly reproduced" if falling else "not reproduced"),
        "evidence": "; ".join(f"{e['depth']}x{e['width']}: last layer r = "
                              f"{e['correlation']['per_layer'][-1]['pearson']:.3f}, slope "
                              f"{e['correlation']['slope']:.4f}/layer, 95% CI [{e['correlation']['slope_ci'][0]:.4f}, "
                              f"{e['correlation']['slope_ci'][1]:.4f}]" for e in deep) or "no configuration deeper than 2"})
    return out


def config_rows(results: dict) -> list[list]:
    rows = []
    for e in sorted(results.values(), key=lambda e: (e["width"], e["depth"])):
        if "slope" not in e:
            rows.append([f"{e['depth']}x{e['width']}", 0, "-", "-", "-", "-", "-", "-"])
            continue
        corr = e["correlation"]["per_layer"]
        rows.append([f"{e['depth']}x{e['width']}", len(e["seeds"]),
                     f"{fmt(e['test_net'][0], '{:.4f}')} +/- {fmt(e['test_net'][1], '{:.4f}')}",
                     f"{e['slope']['slope']:.3f} [{e['slope']['ci'][0]:.3f}, {e['slope']['ci'][1]:.3f}]",
                     e["never_reached"], f"{corr[0]['pearson']:.3f} / {corr[0]['spearman']:.3f}",
                     f"{corr[-1]['pearson']:.3f} / {corr[-1]['spearman']:.3f}",
                     f"{e['correlation']['slope']:.4f} [{e['correlation']['slope_ci'][0]:.4f}, "
                     f"{e['correlation']['slope_ci'][1]:.4f}]"])
    return rows


HEADER = ["config", "seeds", "test acc (network)", "epoch-to-level slope [95% CI]", "layers never at level",
          "r layer 0 (P / S)", "r last layer (P / S)", "r slope per layer [95% CI]"]


def write_report(root: Path, study, results: dict, opts: dict, band: str | None) -> str:
    from ..config import RunConfig
    from ..records import RunDir

    grid = study.grid
    any_cell = next((p for p in sorted((root / "cells").glob("*/config.toml"))), None)
    cfg = RunDir(any_cell.parent).config() if any_cell else RunConfig()
    lines = [f"# Depth/correlation study: {study.layer_type} layers, `{study.grid_name}` grid", "",
             f"Generated by `python -m ffhw.run study --report {root}` from the records in `cells/` "
             "(no retraining). Study definition: `experiments/depth_correlation.toml`.", ""]
    if study.grid_name != "paper":
        lines += [f"**This is the reduced `{study.grid_name}` grid, not the paper's**: "
                  f"{grid.get('note', 'fewer depths, seeds and epochs than Adamson 2025')}", ""]
    lines += ["## What ran", "",
              "- factors: " + ", ".join(f"{k} = {v}" for k, v in grid["factors"].items()),
              f"- seeds per configuration: {grid.get('seeds', 1)}"
              + "".join(f"; {r['seeds']} for {r['match']}" for r in grid.get("extra", [])),
              f"- data: {cfg.data.dataset}, label encoding `{cfg.data.encoding}`, "
              f"{cfg.data.train_subset or 'all'} training images, {cfg.data.val_size} validation images "
              "(held out from the training set)",
              f"- model: {study.layer_type} layers, goodness `{cfg.model.goodness}`, loss `{cfg.model.loss}`, "
              f"theta {cfg.model.theta} per unit, input norm `{cfg.model.norm}`, peer norm {cfg.model.peer_norm}, "
              f"layer options {cfg.model.layer}",
              f"- training: {cfg.train.epochs} epochs, {cfg.train.optimizer} lr {cfg.train.lr}, batch "
              f"{cfg.train.batch_size}, schedule `{cfg.train.lr_schedule}`",
              f"- layer accuracy: `{opts['layer_metric']}` on the `{opts['layer_split']}` split; network accuracy: "
              f"`{next(iter(results.values()))['network_metric'] if results else opts['network_metric']}`; "
              f"level {opts['level']}", ""]
    statuses: dict[str, int] = {}
    for e in results.values():
        for k, v in e["status"].items():
            statuses[k] = statuses.get(k, 0) + v
    lines += ["Cells: " + ", ".join(f"{v} {k}" for k, v in sorted(statuses.items())), ""]
    lines += ["## Measured", "", markdown_table(HEADER, config_rows(results)), "",
              "Slopes are least-squares fits of the seed-mean epoch-to-level against layer index, with 95% "
              "percentile intervals from a bootstrap over seeds; r is over all epochs and seeds of a layer, "
              "with Fisher-z 95% intervals in the figures. `nan`: the layer's accuracy never moved from chance "
              "(a constant series has no correlation).", ""]
    lines += ["## The paper's findings, checked", ""]
    for c in claims(results):
        lines += [f"- **{c['claim']}** {c['verdict'].capitalize()}: {c['evidence']}."]
    lines += ["", "## Figures", "",
              "![per-layer accuracy](figures/layer_accuracy.png)", "",
              f"![std bands ({band})](figures/std_bands.png)" if band else "", "",
              "![epoch to level](figures/epoch_to_level.png)", "",
              "![correlation](figures/correlation.png)", ""]
    text = "\n".join(lines)
    (root / "REPORT.md").write_text(text)
    return text


def terminal_table(results: dict, title: str):
    from rich.table import Table
    t = Table(title=title, title_justify="left")
    for h in HEADER:
        t.add_column(h, justify="left" if h == "config" else "right")
    for row in config_rows(results):
        t.add_row(*map(str, row))
    return t


def analyze(root: Path, study, quiet: bool = False) -> dict:
    import json

    from rich.console import Console

    from ..records import atomic_write
    from ..records import load_cells

    root = Path(root)
    opts = {**ANALYSIS_DEFAULTS, **study.definition.get("analysis", {})}
    results = summarize(load_cells(root), opts)
    figures = root / "figures"
    figure_curves(results, opts, figures / "layer_accuracy.png")
    band = figure_bands(results, opts, figures / "std_bands.png")
    figure_epoch_to_level(results, opts, figures / "epoch_to_level.png")
    figure_correlation(results, figures / "correlation.png")
    write_report(root, study, results, opts, band)
    public = {k: {kk: vv for kk, vv in e.items() if kk not in ("layer", "net")} for k, e in results.items()}
    out = {"options": opts, "configurations": public, "claims": claims(results)}
    atomic_write(root / "analysis.json", json.dumps(json_ready(out), indent=1) + "\n")
    console = Console(quiet=quiet)
    console.print(terminal_table(results, f"depth/correlation, {study.layer_type} layers ({study.grid_name} grid)"))
    for c in out["claims"]:
        console.print(f"- {c['claim']} [bold]{c['verdict']}[/bold]")
    console.print(f"report: {root / 'REPORT.md'}")
    return out
