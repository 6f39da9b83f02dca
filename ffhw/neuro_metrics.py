"""NeuroBench's metric definitions (Yik et al., Nature Communications 2025; the `neurobench` package, 2.x),
applied to the deployed graphs of a trained network.

The `neurobench` package itself does not install cleanly beside ffhw: it requires `torchaudio`, whose
registry wheels are built against another torch (on this torch it fails to load, `OSError: Could not load
this library`), and pulls tonic, librosa, numba and scikit-learn for its datasets. Its definitions are
short, so they are restated here from its source and tested on hand-counted cases:

- footprint: bytes of every parameter and buffer of the model, at their storage type;
- connection sparsity: zero weights / all weights of the connection layers (Linear, Conv), biases excluded;
- activation sparsity: zero outputs / all outputs of the activation layers, over every layer, time step
  and sample (pooled, not a mean of layer ratios);
- synaptic operations per sample, summed over every call of every connection layer: inputs and weights
  binarised (non-zero -> 1), the ops are binary input x binary weight (bias excluded); counted as ACs when
  the layer's input is all in {-1, 0, 1} (spikes), else as MACs ("effective"); "dense" counts every input
  and weight.

ffhw applies them to what the exported graphs compute. Where ffhw's graphs and a NeuroBench run differ:
a direct-encoded spiking layer 0 computes its constant current once (NeuroBench steps a network T times,
so it would count T x these MACs); Brevitas layers are counted with their quantized weights (NeuroBench reads
`module.weight`, the float shadow weights, and would report no zero weights); the footprint is what the
torch modules hold (fp32 shadow weights for quantized layers), while ffhw's `deployed_weight_bytes` counts
the deployed bits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CONNECTIONS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def values(x) -> torch.Tensor:
    return getattr(x, "value", x).detach()  # a Brevitas QuantTensor holds its values in .value


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weights as deployed: a Brevitas layer's quantized weights (quantized zeros are zeros)."""
    quant = getattr(module, "quant_weight", None)
    return values(quant()) if callable(quant) else module.weight.detach()


def is_spiking(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1) | (x == -1)).all())


def synaptic_operations(module: nn.Module, inp: torch.Tensor) -> tuple[float, float, bool]:
    """(effective ops, dense ops, spiking input) of one call of a connection layer on a batch."""
    x = values(inp).float()
    w = (effective_weight(module) != 0).float()
    binary, ones = (x != 0).float(), torch.ones_like(x)
    if isinstance(module, nn.Linear):
        op = lambda a, b: F.linear(a, b)  # noqa: E731
    else:
        conv = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}[type(module)]
        op = lambda a, b: conv(a, b, None, module.stride, module.padding, module.dilation, module.groups)  # noqa: E731
    with torch.no_grad():
        return op(binary, w).sum().item(), op(ones, torch.ones_like(w)).sum().item(), is_spiking(x)


class Counter:
    """Forward hooks on every connection layer of a module tree: accumulates NeuroBench's synaptic ops."""

    def __init__(self, root: nn.Module):
        self.macs = self.acs = self.dense = 0.0
        self.handles = [m.register_forward_hook(self.hook) for m in root.modules() if isinstance(m, CONNECTIONS)]

    def hook(self, module, args, output):
        effective, dense, spiking = synaptic_operations(module, args[0])
        self.dense += dense
        if spiking:
            self.acs += effective
        else:
            self.macs += effective

    def close(self):
        for h in self.handles:
            h.remove()


def footprint(modules: list[nn.Module]) -> int:
    return int(sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()]))


def connection_sparsity(modules: list[nn.Module]) -> float:
    weights = [effective_weight(m) for root in modules for m in root.modules() if isinstance(m, CONNECTIONS)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


@torch.no_grad()
def neurobench_metrics(model, images: torch.Tensor, seed_index: int = 0, batch: int = 200) -> dict:
    """NeuroBench's static and workload metrics of one seed's deployed network, per pass of one sample over
    every label embedding of `images` (as ffhw's cost model), per layer and in total."""
    front = model.encoding.export_front(seed_index)
    cores = [layer.export_module(seed_index).eval() for layer in model.layers]
    counters = [Counter(core) for core in cores]
    zeros, outputs, passes = [0] * len(cores), [0] * len(cores), 0
    try:
        for start in range(0, len(images), batch):
            x = front.all_labels(images[start:start + batch])
            x = model.layers[0].export_input(x) if not model.layers[0].takes_label_input() else x
            passes += x.shape[0]
            for k, core in enumerate(cores):
                _, x = core(x)
                zeros[k] += int((x == 0).sum())
                outputs[k] += x.numel()
    finally:
        for c in counters:
            c.close()
    layers = [{"layer": k, "effective_macs": c.macs / passes, "effective_acs": c.acs / passes,
               "dense_synops": c.dense / passes, "activation_sparsity": zeros[k] / outputs[k],
               "connection_sparsity": connection_sparsity([core]), "footprint_bytes": footprint([core])}
              for k, (c, core) in enumerate(zip(counters, cores))]
    return {"footprint_bytes": footprint([front, *cores]), "connection_sparsity": connection_sparsity(cores),
            "activation_sparsity": sum(zeros) / sum(outputs),
            "synaptic_operations": {"effective_macs": sum(L["effective_macs"] for L in layers),
                                    "effective_acs": sum(L["effective_acs"] for L in layers),
                                    "dense": sum(L["dense_synops"] for L in layers)},
            "layers": layers, "passes": passes,
            "definitions": "NeuroBench 2.x, restated in ffhw/neuro_metrics.py; per pass of one sample"}
