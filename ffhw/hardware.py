"""Hardware cost model of a trained network, measured on the test set: `python -m ffhw.hardware RUN_DIR`
(or `python -m ffhw.run cost RUN_DIR`) prints it beside NeuroBench's metrics and writes RUN_DIR/cost.json.

Per layer and per pass of one sample: dense MACs, MACs on non-zero inputs (what zero-skipping hardware
executes), synaptic operations (ACs: input spikes x fan-out, spiking layers), BOPs (MACs x weight bits x
input bits, quantized layers), membrane updates, deployed weight footprint, activation sparsity and spike
rate, and an ENERGY ESTIMATE from the 45 nm table of Horowitz (ISSCC 2014). The estimate counts arithmetic
only: memory access, which usually dominates, is excluded.

Per classification, the goodness classifier runs layer 0 once per image (the label only changes a few
inputs, see FFLayer.forward_labels) and every other layer once per label; the linear head runs each layer once.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

# picojoules per operation, 45 nm (Horowitz 2014)
ENERGY_PJ = {
    "fp32_mac": 3.7 + 0.9,  # fp32 multiply + fp32 add
    "int8_mac": 0.2 + 0.1,  # int8 multiply + int32 accumulate
    "fp32_ac": 0.9,  # fp32 add: one synaptic operation of a binary spike
    "neuron_update": 3.7 + 0.9,  # beta * mem + current (fp32)
}


@torch.no_grad()
def measure_activity(model, images: torch.Tensor, seed_index: int = 0, batch: int = 500) -> list[dict]:
    """Mean sparsity / spike rate of each layer's output over all label embeddings of the images."""
    sums, count = None, 0
    for start in range(0, len(images), batch):
        _, _, stats = model.evaluate_batch(images[start:start + batch], with_head=False)
        n = len(images[start:start + batch])
        values = [{k: v[seed_index].item() * n for k, v in st.items() if v.dim() == 1} for st in stats]  # [S] means
        sums = values if sums is None else [{k: a[k] + b[k] for k in a} for a, b in zip(sums, values)]
        count += n
    return [{k: v / count for k, v in st.items()} for st in sums]


def cost_model(model, images: torch.Tensor, seed_index: int = 0) -> dict:
    model.eval()
    activity = measure_activity(model, images, seed_index)
    density = model.encoding.input_density(images)  # non-zero share of layer 0's inputs
    layers, c = [], model.num_classes
    totals = {"goodness": 0.0, "head": 0.0}
    for k, layer in enumerate(model.layers):
        ops = layer.op_counts(density)
        energy = (ops["macs"] * ENERGY_PJ[ops["mac_kind"]] + ops["acs"] * ENERGY_PJ["fp32_ac"]
                  + ops["neuron_updates"] * ENERGY_PJ["neuron_update"])
        entry = {"layer": k, "type": layer.type_name, "in": layer.in_features, "out": layer.out_features,
                 **ops, "weight_bits": layer.weight_bits(), "deployed_weight_bytes": layer.deployed_weight_bytes(),
                 "input_density": density, "output_sparsity": activity[k].get("sparsity"),
                 "spike_rate": activity[k].get("spike_rate"), "energy_pj_estimate": energy}
        layers.append(entry)
        totals["goodness"] += energy * (1 if k == 0 else c)
        totals["head"] += energy
        density = 1.0 - activity[k]["sparsity"]
    return {"layers": layers, "energy_per_classification_pj_estimate": totals,
            "deployed_weight_bytes": sum(e["deployed_weight_bytes"] for e in layers),
            "energy_table_pj": ENERGY_PJ,
            "note": "energy is an estimate of arithmetic at 45 nm (Horowitz 2014); memory access is excluded"}


def table(cost: dict, neuro: dict):
    from rich.table import Table
    t = Table(title="per layer, one pass of one sample (NB: NeuroBench's definitions, ffhw/neuro_metrics.py)")
    for col in ("layer", "in x out", "MACs", "non-zero MACs", "ACs", "BOPs", "NB eff. MACs", "NB eff. ACs",
                "NB dense", "NB act. sparsity", "NB conn. sparsity", "energy nJ (est.)"):
        t.add_column(col, justify="right")
    for c, n in zip(cost["layers"], neuro["layers"]):
        t.add_row(str(c["layer"]), f"{c['in']} x {c['out']}", f"{c['macs']:,}", f"{c['nonzero_macs']:,.0f}",
                  f"{c['acs']:,.0f}", f"{c['bops']:,.0f}" if c["bops"] else "-", f"{n['effective_macs']:,.0f}",
                  f"{n['effective_acs']:,.0f}", f"{n['dense_synops']:,.0f}", f"{n['activation_sparsity']:.3f}",
                  f"{n['connection_sparsity']:.3f}", f"{c['energy_pj_estimate'] / 1000:,.1f}")
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ffhw.hardware", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished run directory (holds model.pt)")
    p.add_argument("--seed-index", type=int, default=0, help="which of the run's seeds (default 0)")
    p.add_argument("--images", type=int, default=1000,
                   help="test images for NeuroBench's workload metrics, every label each (default 1000)")
    p.add_argument("--out", help="JSON path (default RUN_DIR/cost.json)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from rich.console import Console

    from .data import load
    from .errors import ConfigError
    from .model import load_model
    from .neuro_metrics import neurobench_metrics
    model, cfg = load_model(args.run_dir)
    if not 0 <= args.seed_index < model.seeds:
        raise ConfigError(f"--seed-index {args.seed_index} is out of range: the run has {model.seeds} seed(s)")
    d = load(cfg.data.dataset, cfg.data.data_dir or None, "cpu", cfg.data.val_size, cfg.data.train_subset)
    cost = cost_model(model, d.test.images(slice(None)), args.seed_index)
    neuro = neurobench_metrics(model, d.test.images(slice(0, args.images)), args.seed_index)
    Console().print(table(cost, neuro))
    print(f"NeuroBench: footprint {neuro['footprint_bytes']:,} bytes (ffhw deployed: {cost['deployed_weight_bytes']:,.0f}), "
          f"connection sparsity {neuro['connection_sparsity']:.3f}, activation sparsity {neuro['activation_sparsity']:.3f}, "
          f"synaptic ops per pass: {neuro['synaptic_operations']['effective_macs']:,.0f} MACs, "
          f"{neuro['synaptic_operations']['effective_acs']:,.0f} ACs, {neuro['synaptic_operations']['dense']:,.0f} dense")
    out = Path(args.out or Path(args.run_dir) / "cost.json")
    out.write_text(json.dumps({"ffhw": cost, "neurobench": neuro}, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    from .errors import run_cli
    sys.exit(run_cli(main, sys.argv[1:]))
