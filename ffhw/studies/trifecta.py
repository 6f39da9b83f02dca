"""The Trifecta ablation (Dooms et al., arXiv 2311.18130): SymBa loss, APL/OLU pairs and batch norm, alone and
together, per dataset; analysed from cells/ only.

- ablation table: test accuracy (argmax over labels of the last block's goodness) mean +/- std over seeds per
  variant and dataset, beside the thesis numbers where the dataset matches;
- per-block 10-way test accuracy per variant ("layerwise performance" figure);
- training curves: validation accuracy per epoch per variant;
- the thesis ordering (Vanilla < SymBa < SymBa+APL, SymBa+BN < Trifecta): each step is the difference of
  test accuracy between two variants paired by seed (variants of one seed share its data order), with a t
  interval across seeds and a verdict by the definition's [analysis.rule] (confidence, minimum seeds); a step
  between variants whose validation curve is still rising (more than `max_final_gain` per epoch over the last
  third of training) is not testable with this grid: the ranking of nets still learning is not their ranking.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..stats import mean_std, paired_t, slope, verdict
from .common import (final_value, fmt, group_cells, json_ready, markdown_table, net_curve, pyplot, report_command,
                     save_figure, status_counts, unfinished, unfinished_label)

NETWORK_METRIC = "acc_goodness"
RULE = {"confidence": 0.95, "min_seeds": 5, "max_final_gain": 0.005}
LABELS = {"vanilla": "Vanilla", "symba": "SymBa", "symba-apl": "SymBa+APL", "symba-bn": "SymBa+BN",
          "trifecta": "Trifecta"}


def handles(factor: str) -> bool:
    return False  # variants are [levels.variant.*] tables; other factors are config paths


def apply(cfg, factors: dict, definition: dict, nested: list[dict] | None = None) -> None:
    pass


def variant_name(factors: dict) -> str:
    """The variant of a cell: its `variant` factor, or the factorial's switches spelled out."""
    if "variant" in factors:
        return str(factors["variant"])
    parts = [f"{k.split('.')[-1]}={v}" for k, v in factors.items() if k != "data.dataset"]
    return ",".join(parts)


def variant_order(name: str) -> tuple:
    return (list(LABELS).index(name) if name in LABELS else len(LABELS), name)


def block_activity(cell: dict, k: int) -> float:
    """Share of a block's outputs that are non-zero on the test set: its spike rate for spiking blocks,
    1 - sparsity otherwise. Zero means the block is silent, so its goodness cannot rank labels."""
    rate = final_value(cell, "test", str(k), "spike_rate")
    if math.isfinite(rate):
        return rate
    sparsity = final_value(cell, "test", str(k), "sparsity")
    return 1.0 - sparsity if math.isfinite(sparsity) else math.nan


def summarize(cells: list[dict]) -> dict:
    out: dict[str, dict[str, dict]] = {}
    for key, group in group_cells(cells).items():
        factors = group[0]["factors"]
        dataset = factors.get("data.dataset", "?")
        variant = variant_name(factors)
        done = [c for c in group if c["status"] == "complete"]
        test = [final_value(c, "test", "net", NETWORK_METRIC) for c in done]
        n_layers = 1 + max((int(r["layer"]) for c in done for r in c["rows"] if r["layer"] != "net"), default=-1)
        per_layer = [mean_std([final_value(c, "test", str(k), "layer_acc10") for c in done])
                     for k in range(n_layers)]
        activity = [mean_std([block_activity(c, k) for c in done])[0] for k in range(n_layers)]
        epochs = np.array(sorted({r["epoch"] for c in done for r in c["rows"] if r["split"] == "val"}), dtype=float)
        curve = net_curve(group, "val", NETWORK_METRIC, epochs)
        tail = max(2, len(epochs) // 3)  # the last third of training (at least two epochs)
        gains = [slope(epochs[-tail:], c[-tail:]) for c in curve] if len(epochs) >= 2 else []
        out.setdefault(dataset, {})[variant] = {
            "factors": factors, "status": status_counts(group), "seeds": [c["seed"] for c in done],
            "test": mean_std(test), "test_by_seed": {c["seed"]: t for c, t in zip(done, test)},
            "final_gain": mean_std(gains)[0], "per_layer": per_layer, "activity": activity,
            "silent_blocks": [k for k, a in enumerate(activity) if a == 0.0],
            "epochs": epochs, "val_curve": curve,
            "train_seconds": mean_std([c.get("train_seconds_unit") for c in done]),
        }
    return {d: dict(sorted(vs.items(), key=lambda kv: variant_order(kv[0]))) for d, vs in sorted(out.items())}


def ordering(results: dict, pairs: list[list[str]], rule: dict | None = None) -> list[dict]:
    """Each expected `a < b` step: the per-seed difference b - a (paired by seed), its t interval, and the
    verdict of the declared rule ("reproduced" = b is better, beyond noise)."""
    rule = {**RULE, **(rule or {})}
    checks = []
    for dataset, variants in results.items():
        for a, b in pairs:
            if a not in variants or b not in variants:
                continue
            ea, eb = variants[a], variants[b]
            seeds = sorted(set(ea["test_by_seed"]) & set(eb["test_by_seed"]))
            if not seeds:
                continue
            est = paired_t([ea["test_by_seed"][s] for s in seeds], [eb["test_by_seed"][s] for s in seeds],
                           rule["confidence"])
            last = len(ea["activity"]) - 1
            silent = last in ea["silent_blocks"] or last in eb["silent_blocks"]
            learning = [v for v, e in ((a, ea), (b, eb)) if math.isfinite(e["final_gain"])
                        and e["final_gain"] > rule["max_final_gain"]]
            decided = verdict(est, "positive", rule)
            reasons = (["a silent last block"] if silent else []) + \
                ([f"still learning: {', '.join(learning)}"] if learning else []) + \
                ([f"{est['n']} seeds, the rule needs {rule['min_seeds']}"] if est["n"] < rule["min_seeds"] else [])
            why = "; ".join(reasons)
            if silent or learning:
                decided = "not testable with this grid"
            checks.append({"dataset": dataset, "lower": a, "higher": b, "difference": est, "verdict": decided,
                           "reason": why, "judged": not silent, "holds": not silent and est["mean"] > 0})
    return checks


def variant_colors(variants) -> dict:
    """A fixed colour per variant (the five ablation variants first, in order), so every report's figures agree."""
    names = list(dict.fromkeys([*LABELS, *variants]))
    palette = pyplot().get_cmap("tab10").colors
    return {v: palette[i % len(palette)] for i, v in enumerate(names)}


def figure_per_dataset(results: dict, path: Path, draw, title: str, xlabel: str, ylabel: str,
                       chance: float | None = 0.1) -> None:
    """One subplot per dataset, one line per variant drawn by `draw(ax, entry, label)`."""
    plt = pyplot()
    datasets = list(results)
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets) + 1.5, 4.2), squeeze=False, sharey=True,
                             layout="constrained")
    colors = variant_colors(v for d in datasets for v in results[d])
    for ax, dataset in zip(axes[0], datasets):
        for i, (variant, e) in enumerate(results[dataset].items()):
            ax.set_prop_cycle(color=[colors[variant]])
            draw(ax, e, LABELS.get(variant, variant), (i - (len(results[dataset]) - 1) / 2) * 0.06)
        if chance is not None:
            ax.axhline(chance, color="grey", lw=0.8, ls="--", label="chance (10 classes)")
        ax.set_ylim(0.0, 1.02)  # accuracies on their whole range: a flat line stays flat
        ax.set_title(f"{dataset}: {title}", fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    legend = {}  # every variant of any panel, once (a panel may lack some), in the ablation's order
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    rank = {label: i for i, label in enumerate(LABELS.get(v, v) for v in colors)}
    legend = dict(sorted(legend.items(), key=lambda item: rank.get(item[0], len(rank))))
    fig.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize=8)
    save_figure(fig, path)


def draw_layers(ax, e: dict, label: str, offset: float = 0.0) -> None:
    means = np.array([m for m, _, _ in e["per_layer"]])
    stds = np.array([s for _, s, _ in e["per_layer"]])
    ax.errorbar(np.arange(len(means)) + offset, means, yerr=stds, marker="o", ms=3, capsize=2, label=label)


def draw_activity(ax, e: dict, label: str, offset: float = 0.0) -> None:
    ax.plot(np.arange(len(e["activity"])) + offset, e["activity"], marker="o", ms=3, label=label)


def draw_curve(ax, e: dict, label: str, offset: float = 0.0) -> None:
    if not e["val_curve"].size:
        return
    with np.errstate(all="ignore"):
        mean, std = np.nanmean(e["val_curve"], 0), np.nanstd(e["val_curve"], 0)
    line, = ax.plot(e["epochs"], mean, label=label)
    ax.fill_between(e["epochs"], mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)


def table_rows(results: dict, thesis: dict) -> list[list]:
    rows = []
    for dataset, variants in results.items():
        for variant, e in variants.items():
            m, s, n = e["test"]
            ref = thesis.get(dataset, {}).get(variant)
            spread = f" +/- {fmt(100 * s, '{:.2f}')}" if n > 1 else " (one seed: no spread)"
            rows.append([dataset, LABELS.get(variant, variant), n, f"{fmt(100 * m, '{:.2f}')}{spread}",
                         fmt(ref, "{:.1f}"), " ".join(fmt(pm, "{:.3f}") for pm, _, _ in e["per_layer"]),
                         " ".join(fmt(a, "{:.2f}") for a in e["activity"]), fmt(e["final_gain"], "{:+.4f}"),
                         fmt(e["train_seconds"][0], "{:.0f}"),
                         ", ".join(f"{v} {k}" for k, v in sorted(e["status"].items()))])
    return rows


HEADER = ["dataset", "variant", "seeds", "test acc % (mean +/- std)", "thesis %", "per-block 10-way test acc",
          "per-block activity", "val gain/epoch, last third", "train s (unit)", "cells"]


def missing_lines(study, results: dict) -> list[str]:
    """What the report's numbers leave out: datasets the grid does not have, configurations not yet finished."""
    lines = []
    datasets = study.grid["factors"].get("data.dataset", [])
    absent = [name for name in ("cifar10", "svhn") if name not in datasets]
    if absent:
        lines.append(f"- {' and '.join(absent)} not in this grid: they need a machine that can download them "
                     "(`ffhw.data` fetches and verifies the official files on first use).")
    done = [(e["factors"], len(e["seeds"])) for vs in results.values() for e in vs.values()]
    pending = [unfinished_label(f"{f.get('data.dataset', '?')} {variant_name(f)}", have, want)
               for f, have, want in unfinished(study, done)]
    if pending:
        lines.append("- not finished, so missing from (or, with fewer seeds, partial in) the numbers below: "
                     + "; ".join(pending)
                     + " (the study command resumes them)")
    return lines


def with_steps_not_run(study, checks: list[dict]) -> list[dict]:
    """The checks in the grid's order, with the ordering steps whose cells have not all run yet marked so
    (a grid still being run: a step no cell has reached is not a result)."""
    factors = study.grid["factors"]
    variants, pairs = factors.get("variant", []), study.definition.get("analysis", {}).get("ordering", [])
    by_step = {(c["dataset"], c["lower"], c["higher"]): c for c in checks}
    steps = [by_step.pop((d, a, b), None) or {"dataset": d, "lower": a, "higher": b, "verdict": "not run yet"}
             for d in sorted(factors.get("data.dataset", [])) for a, b in pairs if a in variants and b in variants]
    return steps + list(by_step.values())


def write_report(root: Path, study, results: dict, checks: list[dict], thesis: dict, note: str, rule: dict) -> None:
    from ..config import RunConfig
    from ..records import RunDir

    grid = study.grid
    any_cell = next(iter(sorted((root / "cells").glob("*/config.toml"))), None)
    cfg = RunDir(any_cell.parent).config() if any_cell else RunConfig()
    lines = [f"# Trifecta ablation: {study.layer_type} layers, `{study.grid_name}` grid", "",
             f"Generated by `{report_command(root)}` from the records in `cells/` (no retraining). "
             "Study definition: `experiments/trifecta.toml`.", ""]
    if study.grid_name != "paper":
        lines += [f"**This is the reduced `{study.grid_name}` grid, not the thesis setting**: {grid.get('note', '')}", ""]
    lines += ["## What ran", "",
              "- factors: " + ", ".join(f"{k} = {v}" for k, v in grid["factors"].items()),
              f"- seeds per configuration: {grid.get('seeds', 1)}",
              f"- network: `{cfg.model.architecture}` conv blocks x width scale {cfg.model.width_scale}, "
              f"{study.layer_type} layers, options {cfg.model.layer}",
              f"- training: {cfg.train.epochs} epochs, {cfg.train.optimizer} lr {cfg.train.lr}, batch "
              f"{cfg.train.batch_size}, augmentation crop pad {cfg.data.crop_padding} + rotation "
              f"{cfg.data.max_rotation} deg, {cfg.data.train_subset or 'all'} training images, "
              f"{cfg.data.val_size} validation images",
              *missing_lines(study, results), "",
              "## Ablation (test set)", "", markdown_table(HEADER, table_rows(results, thesis)), "",
              f"Thesis column: {note}. Test accuracy is the argmax over labels of the last block's goodness.", "",
              "## The thesis ordering, checked", "",
              f"Vanilla < SymBa < SymBa+APL, SymBa+BN < Trifecta. Each step: test accuracy of the higher variant minus "
              f"the lower, per seed (the variants of a seed share its data order), mean with a "
              f"{rule['confidence']:.0%} t interval across seeds. Rule (`[analysis.rule]`): reproduced when the "
              f"interval lies above 0, contradicted when below, not reproduced when it contains 0; not testable with "
              f"fewer than {rule['min_seeds']} seeds, with a silent last block, or while a variant's validation "
              f"accuracy still rises by more than {rule['max_final_gain']} per epoch over the last third of training "
              "(a ranking of networks still learning is not their ranking).", ""]
    steps = with_steps_not_run(study, checks)
    if not steps:
        lines.append("- no step to check: the grid holds no two variants of the ordering on one dataset.")
    for c in steps:
        if "difference" not in c:
            lines.append(f"- {c['dataset']}: {LABELS.get(c['lower'], c['lower'])} < "
                         f"{LABELS.get(c['higher'], c['higher'])} -> **not run yet** (the study command runs it)")
            continue
        d = c["difference"]
        lines.append(f"- {c['dataset']}: {LABELS.get(c['lower'], c['lower'])} < {LABELS.get(c['higher'], c['higher'])}: "
                     f"{fmt(100 * d['mean'], '{:+.2f}')} pp [{fmt(100 * d['ci'][0], '{:+.2f}')}, "
                     f"{fmt(100 * d['ci'][1], '{:+.2f}')}] ({d['n']} seeds) -> **{c['verdict']}**"
                     + (f" ({c['reason']})" if c["reason"] else ""))
    silent = [(d, v, e["silent_blocks"]) for d, vs in results.items() for v, e in vs.items() if e["silent_blocks"]]
    if silent:
        lines += ["", "Silent blocks (no non-zero output on the test set, in every seed): "
                  + "; ".join(f"{d} {LABELS.get(v, v)}: blocks {', '.join(map(str, ks))}" for d, v, ks in silent)
                  + ". A silent last block gives every label the same goodness, so the prediction is a constant "
                    "class (accuracy = that class's share of the test images) and the ordering cannot be judged."]
    note = study.definition.get("analysis", {}).get("notes", {}).get(study.layer_type)
    if note:
        lines += ["", f"**Note on {study.layer_type} layers.** " + " ".join(note.split())]
    by_dataset: dict[str, list[dict]] = {}
    for c in steps:
        by_dataset.setdefault(c["dataset"], []).append(c)
    lines += [""]
    for dataset, cs in by_dataset.items():
        counts: dict[str, int] = {}
        for c in cs:
            counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
        lines.append(f"**{dataset}: " + ", ".join(f"{v} of {len(cs)} steps {k}" for k, v in counts.items()) + ".**")
    lines += ["", "## Figures", "", "![per-block accuracy](figures/layer_accuracy.png)", "",
              "![block activity](figures/block_activity.png)", "",
              "![training curves](figures/training_curves.png)", ""]
    (root / "REPORT.md").write_text("\n".join(lines))


def analyze(root: Path, study, quiet: bool = False) -> dict:
    from rich.console import Console
    from rich.table import Table

    from ..records import atomic_write
    from ..records import load_cells

    root = Path(root)
    options = study.definition.get("analysis", {})
    thesis = options.get("thesis", {})
    results = summarize(load_cells(root))
    rule = {**RULE, **options.get("rule", {})}
    checks = ordering(results, options.get("ordering", []), rule)
    figure_per_dataset(results, root / "figures" / "layer_accuracy.png", draw_layers, "10-way test accuracy per block",
                       "block", "accuracy (argmax of the block's goodness)")
    figure_per_dataset(results, root / "figures" / "block_activity.png", draw_activity,
                       "share of active outputs per block (test)", "block",
                       "activity (spike rate, or 1 - sparsity)", chance=None)
    figure_per_dataset(results, root / "figures" / "training_curves.png", draw_curve,
                       "validation accuracy (last block)", "epoch", "accuracy")
    write_report(root, study, results, checks, thesis, options.get("thesis_note", ""), rule)
    public = {d: {v: {k: x for k, x in e.items() if k not in ("val_curve",)} for v, e in vs.items()}
              for d, vs in results.items()}
    out = {"results": public, "ordering": checks}
    atomic_write(root / "analysis.json", json.dumps(json_ready(out), indent=1) + "\n")
    console = Console(quiet=quiet)
    t = Table(title=f"Trifecta ablation, {study.layer_type} layers ({study.grid_name} grid)", title_justify="left")
    for h in HEADER:
        t.add_column(h)
    for row in table_rows(results, thesis):
        t.add_row(*map(str, row))
    console.print(t)
    console.print(f"report: {root / 'REPORT.md'}")
    return out
