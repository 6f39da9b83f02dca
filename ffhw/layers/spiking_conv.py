"""Spiking conv blocks (the Trifecta networks with LIF neurons): Conv 3x3 once over all T*N rows -> block
normaliser on the current -> [AvgPool 2 of the current] -> LIF neurons over T steps. The neurons, options,
encodings and export rules are the FC spiking layer's (`spiking.py`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ExportError
from .base import LayerOutput, NirPart, register
from .conv import ConvBlock
from .spiking import SpikingExport, SpikingLayer, SpikingOptions, make_lif, nir_neurons, rate_encode


@register("spiking", kind="conv")
class SpikingConvBlock(ConvBlock, SpikingLayer):
    """Conv 3x3 (no bias) once over all T*N rows -> block normaliser on the current -> LIF neurons over T
    steps -> max-pool of each step's spikes (a logical OR); or, with conv_pool = "current", the normalised
    current average-pooled before LIF neurons at the pooled resolution (spikes stay binary, none are ORed).

    The normaliser acts on the input current of every block, analog-fed or spike-fed (spikes stay binary,
    so normalising the block input would reach block 0 only): batch norm over (N, T, H, W) per channel, as
    threshold-dependent batch norm does, or layer norm over (C, H, W) per sample and step. Evaluation runs
    batch norm folded into the conv's weights and a per-channel bias, exactly as exported; layer norm needs
    each sample's statistics at run time, so it stays an operator of the exported graph."""

    def __init__(self, index, in_shape, out_channels, pool, seeds, model, options: SpikingOptions, generators):
        ConvBlock.__init__(self, index, in_shape, out_channels, pool, seeds, model, options, generators)
        self.weight = nn.Parameter(self.conv_init(out_channels, in_shape[0], generators))
        self.lif = make_lif(options)

    def norm_shape(self) -> tuple[int, int, int]:
        return (self.out_shape[0], *self.in_shape[1:])  # the current, before pooling

    def needs_calibration(self) -> bool:
        # a normalised current does not scale with the weights: there is no gain to calibrate
        return super().needs_calibration() and self.block_norm == "none"

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Conv weights [S, O, C, 3, 3] and bias [S, O] (None without batch norm) with eval-mode batch norm
        folded in: BN(conv(x, w)) = conv(x, w * g) + (beta - mean * g), g = gamma / sqrt(var + eps)."""
        if self.block_norm != "batch":
            return self.weight, None
        s, o = self.seeds, self.out_shape[0]
        gain = (self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)).view(s, o)
        bias = self.bn.bias.view(s, o) - self.bn.running_mean.view(s, o) * gain
        return self.weight * gain.view(s, o, 1, 1, 1), bias

    def pools_current(self) -> bool:
        return self.pool and self.options.conv_pool == "current"

    def current(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input current [S, M, O, H', W'] of inputs [S, M, C, H, W] (M = N, or N*T for spikes),
        average-pooled when the block pools its current."""
        if self.block_norm == "batch" and not self.training:
            return self.pool_current(self.conv(x, *self.folded()))
        return self.pool_current(self.normalize_block(self.conv(x, self.weight)))

    def pool_current(self, current: torch.Tensor) -> torch.Tensor:
        return self.maybe_pool(current, F.avg_pool2d) if self.pools_current() else current

    def pool_spikes(self, spikes: torch.Tensor) -> torch.Tensor:
        return spikes if self.pools_current() else self.maybe_pool(spikes)

    def forward(self, x: torch.Tensor) -> LayerOutput:
        if x.dim() == 5 and self.options.encoding == "direct":
            return self.integrate(self.current(x), constant=True)
        if x.dim() == 5:
            x = rate_encode(x, self.steps, self.noise_generators, time_dim=2)
        s, n, t = x.shape[:3]
        current = self.current(x.reshape(s, n * t, *x.shape[3:]))
        return self.integrate(current.reshape(s, n, t, *current.shape[2:]), constant=False)

    def op_counts(self, input_density: float) -> dict:
        counts = ConvBlock.op_counts(self, input_density)
        c, h, w = self.in_shape
        updates = self.steps * (self.out_features if self.pools_current() else self.out_shape[0] * h * w)
        if self.analog_input():
            return {**counts, "neuron_updates": updates}
        return {**counts, "macs": 0, "nonzero_macs": 0.0, "acs": input_density * counts["macs"] * self.steps,
                "neuron_updates": updates}

    def export_module(self, seed: int) -> nn.Module:
        weight, bias = self.folded()
        conv = nn.Conv2d(self.in_shape[0], self.out_shape[0], 3, padding=1, bias=bias is not None)
        with torch.no_grad():
            conv.weight.copy_(weight[seed])
            if bias is not None:
                conv.bias.copy_(bias[seed])
        norm = self.block_norm_module(seed) if self.block_norm == "layer" else nn.Identity()
        if self.pools_current():
            return SpikingExport(nn.Identity(), nn.Sequential(conv, norm, nn.AvgPool2d(2)), self.options,
                                 self.analog_input())
        return SpikingExport(nn.Identity(), nn.Sequential(conv, norm), self.options, self.analog_input(),
                             nn.MaxPool2d(2) if self.pool else None)

    def check_nir(self) -> None:
        SpikingLayer.check_nir(self)
        if self.pool and not self.pools_current():
            raise ExportError("NIR has no max-pool of spikes (a pooled spike is SumPool2d then Threshold, which no "
                              "registry NIR importer reads): train with model.layer.conv_pool = current, or export "
                              "the ONNX bundle")
        if self.block_norm == "layer":
            raise ExportError("layer norm needs each sample's statistics at run time and NIR has no normalisation "
                              "node: train with model.block_norm = batch (folds into the conv) for NIR")

    def export_nir(self, seed: int, dt: float) -> NirPart:
        """Conv2d (batch norm folded in) -> [AvgPool2d of the current] -> the LIF neurons, per channel and pixel."""
        import nir
        import numpy as np
        self.check_nir()
        weight, bias = self.folded()
        c, h, w = self.in_shape
        conv = nir.Conv2d(input_shape=(h, w), weight=weight[seed].detach().numpy(), stride=1, padding=1, dilation=1,
                          groups=1, bias=(np.zeros(self.out_shape[0], dtype=np.float32) if bias is None
                                          else bias[seed].detach().numpy()))
        neurons, edges, entry, exit_ = nir_neurons(self.options, self.out_shape, dt)
        nodes, chain = {"conv": conv}, [("conv", entry)]
        if self.pool:
            nodes["pool"] = nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
            chain = [("conv", "pool"), ("pool", entry)]
        return NirPart({**nodes, **neurons}, [*chain, *edges], "conv", exit_, self.in_shape, self.out_shape,
                       self.nir_encoding(), "none")

    def export_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.takes_label_input():
            return x
        return rate_encode(x, self.steps, torch.Generator().manual_seed(0), time_dim=1)  # [N, T, C, H, W]

    def nir_input(self, x: torch.Tensor) -> torch.Tensor:
        self.check_nir()
        if x.dim() == 5:  # spike trains [N, T, C, H, W]
            return x
        if self.analog_input():  # direct encoding: the image (label channel included), every step
            return x.unsqueeze(1).expand(-1, self.steps, *x.shape[1:]).contiguous()
        return self.export_input(x)

    def export_meta(self) -> dict:
        where = {"batch": "batch norm folded into the conv weights and a per-channel bias",
                 "layer": "layer norm on the current (per-sample statistics at run time: not foldable)",
                 "none": "none"}[self.block_norm]
        return {**super().export_meta(), "current_norm": where}
