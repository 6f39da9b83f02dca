"""REPORT.md of the depth/correlation study: what ran, how far from the paper, the verdicts by the declared
rule, and what the grid cannot decide. Everything comes from the numbers `depth_correlation.summarize` made."""
from __future__ import annotations

from pathlib import Path

from .common import fmt, markdown_table, report_command, unfinished, unfinished_label

DESIGN_TEXT = {
    "nested": "nested: only the deepest network per width and seed trained; each shallower configuration is its "
              "prefix (bit-identical under the simultaneous schedule), with its own goodness classifier and linear "
              "head trained alongside. Depths are the same networks, so they are compared paired by seed and the "
              "depth axis adds no independent networks.",
    "shared": "shared seeds: every configuration trained separately with the same seeds. With layer-local learning a "
              "shallower network is then the bit-identical prefix of the deeper one (only its classifiers differ), "
              "so the depth axis adds no independent networks; depths are compared paired by seed.",
    "independent": "independent: every configuration has its own seeds (the paper's design); configurations are "
                   "independent networks.",
}


def _what_ran(study, cfg, opts: dict, results: dict) -> list[str]:
    grid = study.grid
    rule = opts["rule"]
    metric = next(iter(results.values()))["network_metric"] if results else opts["network_metric"]
    sources = sorted({e.get("crossing_source", "-") for e in results.values() if "delay" in e})
    return ["## What ran", "",
            "- factors: " + ", ".join(f"{k} = {v}" for k, v in grid["factors"].items())
            + "".join(f"; left out: {r.get('match')}" for r in grid.get("exclude", [])),
            f"- seeds per configuration: {grid.get('seeds', 1)}"
            + "".join(f"; {r['seeds']} for {r['match']}" for r in grid.get("extra", [])),
            f"- design: {DESIGN_TEXT[study.design]}",
            f"- data: {cfg.data.dataset}, label encoding `{cfg.data.encoding}`, "
            f"{cfg.data.train_subset or 'all'} training images, {cfg.data.val_size} validation images "
            "(held out from the training set)",
            f"- model: {study.layer_type} layers, goodness `{cfg.model.goodness}`, loss `{cfg.model.loss}`, "
            f"theta {cfg.model.theta} per unit, input norm `{cfg.model.norm}`, peer norm {cfg.model.peer_norm}, "
            f"layer options {cfg.model.layer}",
            f"- training: {cfg.train.epochs} epochs, {cfg.train.optimizer} lr {cfg.train.lr}, batch "
            f"{cfg.train.batch_size}, schedule `{cfg.train.lr_schedule}`",
            f"- layer accuracy: `{opts['layer_metric']}` on the `{opts['layer_split']}` split; network accuracy: "
            f"`{metric}`; level {opts['level']}; crossings read from: {', '.join(sources)} "
            + ("(sub-epoch probes on a fixed held-out batch)" if "probe" in sources
               else "(whole epochs only: no sub-epoch probes were recorded)"),
            f"- inference rule (`[analysis.rule]` of the study definition): {rule['confidence']:.0%} t intervals "
            f"across seeds, at least {rule['min_seeds']} seeds per configuration to decide a claim"
            + "".join(f" ({k}: {v})" for k, v in rule.get("min_seeds_by_claim", {}).items()) + "; a claim is "
            "reproduced when its interval lies beyond the reference in the paper's direction, contradicted when "
            "it lies beyond it the other way, not reproduced when it contains it.", ""]


def pending_configurations(study, results: dict) -> list[str]:
    """The grid's configurations with seeds still to train, as DEPTHxWIDTH."""
    done = [(e["factors"], len(e["seeds"])) for e in results.values() if "delay" in e]
    return [unfinished_label(f"{f.get('depth')}x{f.get('width')}", have, want)
            for f, have, want in unfinished(study, done)]


def _cannot_decide(study, results: dict, opts: dict, claim_list: list[dict]) -> list[str]:
    rule = opts["rule"]
    lines = []
    untestable = [c["claim"] for c in claim_list if c["verdict"] == "not testable with this grid"]
    if untestable:
        special = ", ".join(f"{k} {v}" for k, v in rule.get("min_seeds_by_claim", {}).items())
        lines += [f"- Not testable here (fewer than {rule['min_seeds']} seeds"
                  + (f"; by claim: {special}" if special else "") + ", or no configuration that tests it): "
                  + "; ".join(untestable) + "."]
    pending = pending_configurations(study, results)
    if pending:
        lines += [f"- Not yet trained, so missing from (or partial in) the verdicts above: {', '.join(pending)}. "
                  "The report covers "
                  "finished cells only; the study command resumes the rest from their checkpoints."]
    factors = study.grid["factors"]
    depths = [int(d) for d in factors.get("depth", [])] or [e["depth"] for e in results.values()]
    widths = [int(w) for w in factors.get("width", [])] or [e["width"] for e in results.values()]
    if depths and max(depths) < 30:
        lines += [f"- The paper reports the fall of correlation near layer 30; the deepest network here has "
                  f"{max(depths)} layers."]
    if widths and max(widths) < 1000:
        lines += ["- The paper's larger delay is at width 1000; this grid trains width "
                  + ", ".join(map(str, widths)) + " only."]
    return lines


def write_report(root: Path, study, results: dict, opts: dict, claim_list: list[dict], comparisons: list[dict],
                 figures: list[str], rows: list[list], header: list[str]) -> str:
    from ..config import RunConfig
    from ..records import RunDir

    any_cell = next((p for p in sorted((root / "cells").glob("*/config.toml"))), None)
    cfg = RunDir(any_cell.parent).config() if any_cell else RunConfig()
    lines = [f"# Depth/correlation study: {study.layer_type} layers, `{study.grid_name}` grid", "",
             f"Generated by `{report_command(root)}` from the records in `cells/` "
             "(no retraining). Study definition: `experiments/depth_correlation.toml`.", ""]
    if study.grid_name != "paper":
        lines += [f"**This is the reduced `{study.grid_name}` grid, not the paper's**: "
                  f"{study.grid.get('note', 'fewer depths, seeds and epochs than Adamson 2025')}", ""]
    lines += _what_ran(study, cfg, opts, results)
    statuses: dict[str, int] = {}
    for e in results.values():
        if not e.get("prefix_of"):
            for k, v in e["status"].items():
                statuses[k] = statuses.get(k, 0) + v
    pending = pending_configurations(study, results)
    lines += ["Cells: " + ", ".join(f"{v} {k}" for k, v in sorted(statuses.items()))
              + (f"; configurations not yet finished: {', '.join(pending)}" if pending else ""), ""]
    lines += ["## Measured", "", markdown_table(header, rows), "",
              "Every interval is a t interval across seeds (one value per seed, seeds independent). Correlations "
              "are per seed over the epochs, combined with Fisher z. *Partial r* removes from both curves what "
              "training progress (1, log epoch, log epoch squared) explains: two curves that only share the shape "
              "of learning give about 0. *r of log(epoch)* is the baseline: the network's correlation with training "
              "progress itself. Delay: concordance of layer index and crossing time over layer pairs (+1: every "
              "deeper layer later), counting only pairs whose order censoring leaves certain; left-censored layers "
              "were at the level at the first measurement, right-censored ones never reached it (kept at their "
              "bounds in the slope, so the slope is a lower bound when deep layers never arrive).", ""]
    lines += ["## The paper's findings, checked", ""]
    for c in claim_list:
        tag = "" if c["paper"] else " *(not the paper's; separates a layer from training progress)*"
        lines += [f"- **{c['claim']}**{tag} -> **{c['verdict']}** (direction: {c['direction']}). {c['evidence']}."]
    if comparisons:
        lines += ["", "## Depths compared", "", markdown_table(
            ["width", "depth", "test acc minus the deepest's [CI]", "method"],
            [[c["width"], f"{c['depth']} vs {c['deepest']}",
              f"{fmt(c['difference']['mean'], '{:+.4f}')} [{fmt(c['difference']['ci'][0], '{:+.4f}')}, "
              f"{fmt(c['difference']['ci'][1], '{:+.4f}')}]", c["method"]] for c in comparisons])]
    lines += ["", "## What this grid cannot decide", ""] + _cannot_decide(study, results, opts, claim_list)
    lines += ["", "## Figures", ""] + [f"![{name}](figures/{name}.png)\n" for name in figures]
    text = "\n".join(lines)
    (root / "REPORT.md").write_text(text)
    return text


def terminal_table(rows: list[list], header: list[str], title: str):
    from rich.table import Table
    t = Table(title=title, title_justify="left")
    for h in header:
        t.add_column(h, justify="left" if h == "config" else "right")
    for row in rows:
        t.add_row(*map(str, row))
    return t
