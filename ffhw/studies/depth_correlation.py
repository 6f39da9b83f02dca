"""Depth/correlation study (Adamson 2025, arXiv 2504.11229): how depth delays each layer's learning and
how each layer's accuracy tracks the network's.

Factors `depth` and `width` make `model.hidden = [width] * depth`. Under the grid's `design = "nested"`
only the deepest network per width trains; every shallower configuration is its prefix (exact under the
simultaneous schedule), evaluated alongside with its own goodness classifier and linear head
(`model.prefix_depths`). The analysis reads cells/ only and decides at the level of seeds:

- per seed: each layer's Pearson and Spearman r with the network over the epochs, the same after removing
  shared training progress (`partial_r`) and of epoch-to-epoch changes, and the log(epoch) baseline;
  combined across seeds with Fisher z and t intervals (pooled r over all points is shown, descriptive only);
- per seed: when each layer reaches the level (interpolated, on the sub-epoch probes when the run has them),
  with censored layers kept as censored; delay = censoring-aware concordance of layer and crossing;
- verdicts by the rule in the definition's [analysis.rule] (confidence, minimum seeds, each claim's
  direction), on the deepest configuration per width (it holds every layer the shallower ones have).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import stats as sps

from ..errors import ConfigError
from ..stats import (LEFT, RIGHT, censored_concordance, correlation, crossings, diff_r, fisher_mean, mean_std,
                     paired_t, partial_r, pearson, slope, t_interval, verdict, welch_t)
from .common import curves, fmt, group_cells, has_metric, json_ready, net_curve, status_counts, final_value

FACTORS = ("depth", "width")
RULE = {"confidence": 0.95, "min_seeds": 5, "strong_r": 0.8,
        "directions": {"delay": "positive", "width": "positive", "layer0": "positive", "layer0_beyond_progress": "positive",
                       "fall": "negative", "fall_beyond_progress": "negative"}}
ANALYSIS_DEFAULTS = {"level": 0.7, "layer_metric": "layer_acc", "layer_split": "val", "network_metric": "acc_head",
                     "rule": RULE}


def handles(factor: str) -> bool:
    return factor in FACTORS


def nest(configurations: list[dict]) -> list[dict]:
    """The nested design trains the deepest configuration of each combination of the other factors."""
    deepest: dict[tuple, dict] = {}
    for f in configurations:
        rest = tuple(sorted((k, v) for k, v in f.items() if k != "depth"))
        if rest not in deepest or int(f.get("depth", 0)) > int(deepest[rest].get("depth", 0)):
            deepest[rest] = f
    return list(deepest.values())


def apply(cfg, factors: dict, definition: dict, nested: list[dict] | None = None) -> None:
    if "depth" in factors or "width" in factors:
        depth = int(factors.get("depth", len(cfg.model.hidden)))
        width = int(factors.get("width", cfg.model.hidden[0]))
        if depth < 1 or width < 1:
            raise ConfigError(f"depth = {depth} and width = {width} must be positive")
        cfg.model.hidden = [width] * depth
    if nested is not None:  # the shallower configurations this network stands for
        same = [f for f in nested if all(f.get(k) == v for k, v in factors.items() if k != "depth")]
        cfg.model.prefix_depths = sorted({int(f["depth"]) for f in same if int(f["depth"]) < len(cfg.model.hidden)})


def expand_nested(cells: list[dict]) -> list[dict]:
    """Cells of a nested design as cells of every configuration: a prefix depth D of a deeper cell becomes
    a cell of depth D (its layers 0..D-1, and its own classifiers' metrics `<metric>@D` as `<metric>`)."""
    from ..records import cell_key
    out = []
    for cell in cells:
        out.append(cell)
        depths = sorted({int(r["metric"].split("@")[1]) for r in cell["rows"] if "@" in r["metric"]})
        for d in depths:
            factors = {**cell["factors"], "depth": d}
            rows = [r for r in cell["rows"] if (r["layer"] != "net" and int(r["layer"]) < d)
                    or (r["layer"] == "net" and "@" not in r["metric"] and not r["metric"].startswith(("acc_", "head_")))]
            rows += [dict(r, metric=r["metric"].split("@")[0]) for r in cell["rows"] if r["metric"].endswith(f"@{d}")]
            out.append({**cell, "key": cell_key(factors), "factors": factors, "rows": rows, "prefix_of": cell["key"]})
    return out


# ---------------------------------------------------------------------------------------------- numbers
def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return math.nan
    return float(sps.spearmanr(x[keep], y[keep]).statistic)


def seed_correlations(layer: np.ndarray, net: np.ndarray, epochs: np.ndarray) -> dict[str, np.ndarray]:
    """Per seed and layer [S, L]: Pearson, Spearman, progress-controlled (partial) and change (diff) r with
    the network; `baseline` [S]: Pearson r of log(epoch) with the network (what progress alone gives)."""
    s_n, _, n_layers = layer.shape
    out = {name: np.full((s_n, n_layers), np.nan) for name in ("pearson", "spearman", "partial", "diff")}
    for s in range(s_n):
        for k in range(n_layers):
            x, y = layer[s, :, k], net[s]
            out["pearson"][s, k], out["spearman"][s, k] = pearson(x, y), _spearman(x, y)
            out["partial"][s, k], out["diff"][s, k] = partial_r(x, y, epochs), diff_r(x, y)
    out["baseline"] = np.array([pearson(np.log(epochs), net[s]) for s in range(s_n)])
    return out


def crossing_series(group: list[dict], opts: dict, epochs: np.ndarray, layer: np.ndarray):
    """Times [P] and layer accuracy [S, P, L] for the crossing: the sub-epoch probes where recorded."""
    times, probe, _ = curves(group, "probe", opts["layer_metric"])
    if probe.size:
        return times, probe, "probe"
    return epochs, layer, opts["layer_split"]


def delay_stats(time: np.ndarray, status: np.ndarray, confidence: float) -> dict:
    """Per-seed delay with censoring: concordance of layer and crossing, and the slope of crossing time
    over layers with censored times at their bounds (a lower bound on the delay when deep layers never
    reach the level)."""
    x = np.arange(time.shape[1], dtype=float)
    conc = [censored_concordance(time[s], status[s]) for s in range(len(time))]
    slopes = [slope(x, time[s]) for s in range(len(time))]
    return {"concordance": t_interval(conc, confidence), "slope": t_interval(slopes, confidence),
            "concordance_per_seed": conc, "slope_per_seed": slopes,
            "left_censored": int((status == LEFT).sum()), "right_censored": int((status == RIGHT).sum()),
            "crossings": int(status.size)}


def resolve_options(options: dict) -> dict:
    """The definition's [analysis] options over the defaults (its rule table over the default rule)."""
    return {**ANALYSIS_DEFAULTS, **options, "rule": {**RULE, **options.get("rule", {})}}


def summarize(cells: list[dict], options: dict) -> dict:
    """Every number of the report, per configuration."""
    opts = resolve_options(options)
    conf = opts["rule"]["confidence"]
    results = {}
    for key, group in group_cells(expand_nested(cells)).items():
        factors = group[0]["factors"]
        epochs, layer, n_layers = curves(group, opts["layer_split"], opts["layer_metric"])
        network_metric = opts["network_metric"]
        if not has_metric(group, "val", "net", network_metric):
            network_metric = "acc_goodness"  # networks trained without the head
        net = net_curve(group, "val", network_metric, epochs)
        done = [c for c in group if c["status"] == "complete"]
        entry = {"factors": factors, "depth": int(factors.get("depth", n_layers)),
                 "width": int(factors.get("width", 0)), "seeds": [c["seed"] for c in done],
                 "status": status_counts(group), "epochs": epochs, "layer": layer, "net": net,
                 "network_metric": network_metric, "prefix_of": group[0].get("prefix_of")}
        if layer.size == 0:
            results[key] = entry
            continue
        times, series, source = crossing_series(group, opts, epochs, layer)
        time, status = crossings(times, np.moveaxis(series, 1, 2), opts["level"])  # [S, L]
        entry.update(crossing_source=source, crossing_time=time, crossing_status=status,
                     delay=delay_stats(time, status, conf))
        r = seed_correlations(layer, net, epochs)
        x = np.arange(n_layers, dtype=float)
        entry["r_seed"] = r
        entry["r"] = {name: [fisher_mean(r[name][:, k], conf) for k in range(n_layers)]
                      for name in ("pearson", "spearman", "partial", "diff")}
        entry["r"]["baseline"] = fisher_mean(r["baseline"], conf)
        entry["r_pooled"] = [correlation(layer[:, :, k], net) for k in range(n_layers)]
        entry["fall"] = t_interval([slope(x, r["pearson"][s]) for s in range(len(done))], conf)
        entry["fall_beyond_progress"] = t_interval([slope(x, r["partial"][s]) for s in range(len(done))], conf)
        entry["test_net"] = mean_std([final_value(c, "test", "net", network_metric) for c in done])
        entry["test_net_per_seed"] = {c["seed"]: final_value(c, "test", "net", network_metric) for c in done}
        entry["final_layer"] = [mean_std(layer[:, -1, k]) for k in range(n_layers)]
        results[key] = entry
    return results


def representatives(results: dict) -> list[dict]:
    """The deepest configuration per width: the claims about depth are read from it."""
    best: dict[int, dict] = {}
    for e in results.values():
        if "delay" in e and (e["width"] not in best or e["depth"] > best[e["width"]]["depth"]):
            best[e["width"]] = e
    return [best[w] for w in sorted(best)]


def depth_comparisons(results: dict, design: str, confidence: float) -> list[dict]:
    """Test accuracy of each shallower configuration minus the deepest of its width: paired by seed where
    the networks share seeds (nested, shared), Welch otherwise."""
    out = []
    for top in representatives(results):
        for e in sorted(results.values(), key=lambda e: e["depth"]):
            if e["width"] != top["width"] or e["depth"] >= top["depth"] or "delay" not in e:
                continue
            if design == "independent":
                est = welch_t(list(top["test_net_per_seed"].values()), list(e["test_net_per_seed"].values()), confidence)
                method = "Welch t, independent networks"
            else:
                seeds = sorted(set(top["test_net_per_seed"]) & set(e["test_net_per_seed"]))
                est = paired_t([top["test_net_per_seed"][s] for s in seeds], [e["test_net_per_seed"][s] for s in seeds],
                               confidence)
                method = "paired by seed (the same networks)"
            out.append({"width": e["width"], "depth": e["depth"], "deepest": top["depth"], "difference": est,
                        "method": method})
    return out


# ---------------------------------------------------------------------------------------------- claims
def _interval(est: dict, spec: str = "{:.3f}", unit: str = "") -> str:
    lo, hi = est.get("ci", (math.nan, math.nan))
    return f"{fmt(est.get('mean', est.get('r')), spec)}{unit} [{fmt(lo, spec)}, {fmt(hi, spec)}] ({est.get('n', 0)} seeds)"


def claim_min_seeds(rule: dict, claim: str) -> int:
    """Seeds a claim needs: the rule's minimum unless `min_seeds_by_claim` declares one for that claim."""
    return int(rule.get("min_seeds_by_claim", {}).get(claim, rule["min_seeds"]))


def _width_pair(results: dict):
    """The narrowest and widest width's entries at the deepest depth both have (their delays compare there)."""
    entries = [e for e in results.values() if "delay" in e]
    widths = sorted({e["width"] for e in entries})
    if len(widths) < 2:
        return None, None
    at = {(e["width"], e["depth"]): e for e in entries}
    shared = {d for w, d in at if w == widths[0]} & {d for w, d in at if w == widths[-1]}
    if not shared:
        return None, None
    return at[widths[0], max(shared)], at[widths[-1], max(shared)]


def claims(results: dict, rule: dict) -> list[dict]:
    """The paper's findings (and two that separate a layer from training progress), each decided by the
    declared rule on seed-level intervals of the deepest configuration per width."""
    reps = representatives(results)
    directions = {**RULE["directions"], **rule.get("directions", {})}
    out = []

    def add(cid, claim, per_config, paper=True):
        claim_rule = {**rule, "min_seeds": claim_min_seeds(rule, cid)}
        verdicts = [verdict(est, directions[cid], claim_rule, ref) for _, est, ref, _ in per_config]
        overall = ("not testable with this grid" if not per_config else verdicts[0] if len(set(verdicts)) == 1
                   else "mixed: " + ", ".join(f"{label} {v}" for (label, *_), v in zip(per_config, verdicts)))
        out.append({"id": cid, "claim": claim, "paper": paper, "direction": directions[cid], "verdict": overall,
                    "evidence": "; ".join(f"{label}: {text}" for label, _, _, text in per_config) or "no data"})

    add("delay", "Deeper layers reach the accuracy level later",
        [(f"{e['depth']}x{e['width']}", e["delay"]["concordance"], 0.0,
          f"concordance of layer and crossing {_interval(e['delay']['concordance'])}; slope "
          f"{_interval(e['delay']['slope'], '{:.2f}', ' epochs/layer')} ({e['delay']['left_censored']} left-, "
          f"{e['delay']['right_censored']} right-censored of {e['delay']['crossings']} crossings, at their bounds)")
         for e in reps])
    narrow, wide = _width_pair(results)
    if narrow is not None:
        est = welch_t(narrow["delay"]["slope_per_seed"], wide["delay"]["slope_per_seed"], rule["confidence"])
        add("width", f"The delay grows more with depth at the larger width ({wide['width']} vs {narrow['width']})",
            [(f"depth {wide['depth']}", est, 0.0, f"slope at width {wide['width']} minus width {narrow['width']} "
              f"at depth {wide['depth']}, the deepest both widths have: {_interval(est, '{:.2f}')} (Welch)")])
    else:
        add("width", "The delay grows more with depth at the larger width (paper: 1000 vs 100)", [])
    strong = float(rule.get("strong_r", RULE["strong_r"]))
    add("layer0", f"Layer 0's accuracy correlates strongly with the network's (r about 0.9; rule: above {strong})",
        [(f"{e['depth']}x{e['width']}", e["r"]["pearson"][0], strong,
          f"r {_interval(e['r']['pearson'][0])}, log(epoch) alone {_interval(e['r']['baseline'])}") for e in reps])
    add("layer0_beyond_progress", "Layer 0 tracks the network beyond shared training progress (partial r > 0)",
        [(f"{e['depth']}x{e['width']}", e["r"]["partial"][0], 0.0, f"partial r {_interval(e['r']['partial'][0])}")
         for e in reps], paper=False)
    add("fall", "Correlation falls with depth (paper: about 0.3-0.5 near layer 30)",
        [(f"{e['depth']}x{e['width']}", e["fall"], 0.0,
          f"slope of r over layers {_interval(e['fall'], '{:.4f}')}; last layer r {_interval(e['r']['pearson'][-1])}")
         for e in reps if e["depth"] > 2])
    add("fall_beyond_progress", "The progress-controlled correlation falls with depth",
        [(f"{e['depth']}x{e['width']}", e["fall_beyond_progress"], 0.0,
          f"slope of partial r over layers {_interval(e['fall_beyond_progress'], '{:.4f}')}")
         for e in reps if e["depth"] > 2], paper=False)
    return out


# ---------------------------------------------------------------------------------------------- report
HEADER = ["config", "seeds", "test acc (network)", "delay: concordance [CI]", "delay: slope, epochs/layer [CI]",
          "censored (left/right)", "r layer 0 [CI]", "partial r layer 0 [CI]", "r last layer [CI]",
          "r of log(epoch)", "slope of r per layer [CI]"]


TERMINAL = (0, 1, 2, 3, 6, 7, 10)  # the columns that fit a terminal


def config_rows(results: dict) -> list[list]:
    rows = []
    for e in sorted(results.values(), key=lambda e: (e["width"], e["depth"])):
        name = f"{e['depth']}x{e['width']}" + (" (prefix)" if e.get("prefix_of") else "")
        if "delay" not in e:
            rows.append([name, 0] + ["-"] * (len(HEADER) - 2))
            continue
        d, r = e["delay"], e["r"]
        ci = lambda est, spec="{:.3f}": (f"{fmt(est.get('mean', est.get('r')), spec)} "  # noqa: E731
                                         f"[{fmt(est['ci'][0], spec)}, {fmt(est['ci'][1], spec)}]")
        rows.append([name, len(e["seeds"]), f"{fmt(e['test_net'][0], '{:.4f}')} +/- {fmt(e['test_net'][1], '{:.4f}')}",
                     ci(d["concordance"], "{:.2f}"), ci(d["slope"], "{:.2f}"),
                     f"{d['left_censored']}/{d['right_censored']} of {d['crossings']}",
                     ci(r["pearson"][0]), ci(r["partial"][0]), ci(r["pearson"][-1]), fmt(r["baseline"]["r"]),
                     ci(e["fall"], "{:.4f}")])
    return rows


def analyze(root: Path, study, quiet: bool = False) -> dict:
    import json

    from rich.console import Console

    from ..records import atomic_write, load_cells
    from .depth_figures import draw_all
    from .depth_report import terminal_table, write_report

    root = Path(root)
    opts = resolve_options(study.definition.get("analysis", {}))
    results = summarize(load_cells(root), opts)
    design = study.design
    claim_list = claims(results, opts["rule"])
    comparisons = depth_comparisons(results, design, opts["rule"]["confidence"])
    figures = draw_all(results, opts, design, root / "figures")
    write_report(root, study, results, opts, claim_list, comparisons, figures, config_rows(results), HEADER)
    public = {k: {kk: vv for kk, vv in e.items() if kk not in ("layer", "net", "r_seed")} for k, e in results.items()}
    out = {"options": opts, "design": design, "configurations": public, "claims": claim_list,
           "depth_comparisons": comparisons}
    atomic_write(root / "analysis.json", json.dumps(json_ready(out), indent=1) + "\n")
    console = Console(quiet=quiet)
    console.print(terminal_table([[r[i] for i in TERMINAL] for r in config_rows(results)], [HEADER[i] for i in TERMINAL],
                                 f"depth/correlation, {study.layer_type} layers ({study.grid_name} grid)"))
    for c in claim_list:
        console.print(f"- {c['claim']}: [bold]{c['verdict']}[/bold]")
    console.print(f"report: {root / 'REPORT.md'}")
    return out
