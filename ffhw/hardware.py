"""Hardware cost model of a trained network, measured on the test set.

Per layer and per pass of one sample: dense MACs, MACs on non-zero inputs (what zero-skipping hardware
executes), synaptic operations (ACs: input spikes x fan-out, spiking layers), BOPs (MACs x weight bits x
input bits, quantized layers), membrane updates, deployed weight footprint, activation sparsity and spike
rate, and an ENERGY ESTIMATE from the 45 nm table of Horowitz (ISSCC 2014). The estimate counts arithmetic
only: memory access, which usually dominates, is excluded.

Per classification, the goodness classifier runs layer 0 once per image (the label only changes a few
inputs, see FFLayer.forward_labels) and every other layer once per label; the linear head runs each layer once.
"""
from __future__ import annotations

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
